"""Target functions of the digits demo: each maps digit labels (n,) to one narrow task.

They run vectorised on the whole label tensor; each returns int64 class indices.
"""
import torch

LOOPED = (0, 6, 8, 9)


def has_loop(label: torch.Tensor) -> torch.Tensor:
    """1 when the digit contains a closed loop (0, 6, 8, 9)."""
    return torch.isin(label, torch.tensor(LOOPED)).long()


def is_even(label: torch.Tensor) -> torch.Tensor:
    return (label % 2 == 0).long()


def is_large(label: torch.Tensor) -> torch.Tensor:
    """1 for digits 5 to 9."""
    return (label >= 5).long()

"""Target functions of the digits demo: each maps digit labels (n,) to one narrow yes/no task.

Together the five answers form a code that tells all ten digits apart, so the `digit`
expert can classify from the experts' probabilities alone. They run vectorised on the
whole label tensor and return int64 class indices.
"""
import torch

LOOPED = (0, 6, 8, 9)
PRIMES = (2, 3, 5, 7)


def has_loop(label: torch.Tensor) -> torch.Tensor:
    """1 when the digit contains a closed loop (0, 6, 8, 9)."""
    return torch.isin(label, torch.tensor(LOOPED)).long()


def is_even(label: torch.Tensor) -> torch.Tensor:
    return (label % 2 == 0).long()


def is_large(label: torch.Tensor) -> torch.Tensor:
    """1 for digits 5 to 9."""
    return (label >= 5).long()


def is_prime(label: torch.Tensor) -> torch.Tensor:
    return torch.isin(label, torch.tensor(PRIMES)).long()


def above_six(label: torch.Tensor) -> torch.Tensor:
    """1 for 7, 8 and 9."""
    return (label > 6).long()

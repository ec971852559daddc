"""Behavioural early cutoff: is a downstream expert's behaviour unchanged by a new upstream?

Pure: tensors and tolerances in, a verdict out (tensor methods only; torch is not imported here). The reference is always the behaviour the
expert was trained with (its probe outputs and validation metric), never the outputs of
a later check, so small drifts cannot accumulate unseen: within-tolerance is not
transitive, and this module never chains comparisons.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Deltas:
    """How far a version's new outputs moved from its reference, and its metric's change."""

    max_abs: float  # largest |p_new - p_ref| over probe rows and outputs
    mean_abs: float
    agreement: float  # fraction of probe rows whose prediction is unchanged (classification)
    metric_drop: float  # reference validation metric minus the new one (positive = worse)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Verdict:
    """Keep or retrain, with the tolerances each delta met or broke."""

    keep: bool
    deltas: Deltas
    failed: tuple[str, ...]  # human-readable reasons, e.g. "agreement 91.0% < 98.0%"

    def describe(self) -> str:
        d = self.deltas
        if self.keep:
            return f"max delta {d.max_abs:.3f}, agreement {100 * d.agreement:.1f}%"
        return "; ".join(self.failed)


def probe_rows(n_val: int, probe_size: int) -> torch.Tensor:
    """The probe set: the first `probe_size` rows of the (seeded, fixed) validation split."""
    import torch  # only the write path builds a probe set; the planner side stays torch-free

    return torch.arange(min(n_val, probe_size))


def measure(reference: torch.Tensor, new: torch.Tensor, task: str, ref_metric: float, new_metric: float) -> Deltas:
    """reference, new: (p, c) probabilities (classification) or (p, k) values (regression)."""
    diff = (new.double() - reference.double()).abs()
    if task == "classification":
        agreement = float((new.argmax(dim=1) == reference.argmax(dim=1)).double().mean())
    else:
        agreement = 1.0  # no discrete prediction; max_abs and mean_abs carry the comparison
    return Deltas(max_abs=float(diff.max()) if diff.numel() else 0.0, mean_abs=float(diff.mean()) if diff.numel() else 0.0,
                  agreement=agreement, metric_drop=float(ref_metric - new_metric))


def judge(deltas: Deltas, tolerances: Any) -> Verdict:
    """Keep only if every delta is within its tolerance (tolerances: a CutoffSpec)."""
    failed = []
    if deltas.max_abs > tolerances.max_abs:
        failed.append(f"max delta {deltas.max_abs:.3f} > {tolerances.max_abs}")
    if deltas.mean_abs > tolerances.mean_abs:
        failed.append(f"mean delta {deltas.mean_abs:.4f} > {tolerances.mean_abs}")
    if deltas.agreement < tolerances.agreement:
        failed.append(f"agreement {100 * deltas.agreement:.1f}% < {100 * tolerances.agreement:.1f}%")
    if deltas.metric_drop > tolerances.metric_drop:
        failed.append(f"validation metric dropped by {deltas.metric_drop:.4f} > {tolerances.metric_drop}")
    return Verdict(keep=not failed, deltas=deltas, failed=tuple(failed))

"""What a retraining changed: two versions of one expert compared on the same rows.

Record differences in the words `status` uses (SPEC keys, CODE objects, DATA fields, UPSTREAM
versions); per split, the metric of each, the paired test of their difference (McNemar's exact
test for classification, a seeded paired bootstrap interval for regression), the prediction
churn, the rows that flipped (with their inputs, for the page) and the confusion matrix's change
(B minus A); and how the features each version uses moved (their AGOP diagonals and top
eigenspaces on the same training rows). `mcnemar_exact`, `paired_bootstrap`, `feature_shift` and
`eigenspace_overlap` are pure; `diff_versions` reads the two versions' stored outputs and weights
through a `View`, trains nothing and writes nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

SIGNIFICANCE = 0.05  # below it a difference is reported as detectable
BOOTSTRAP_ROUNDS = 2000
AGOP_ROWS = 500  # training rows both versions' AGOPs are computed on (the same rows)
EIGEN_K = 16  # eigenpairs computed per version; the overlap uses the larger effective rank, at most this
FLIPPED_SHOWN = 8  # flipped rows per direction kept for the page, test split


def feature_shift(diag_a: torch.Tensor, diag_b: torch.Tensor, names: list[str], top: int = 3) -> dict:
    """How the features two versions use moved: the cosine of their AGOP diagonals, and the
    features whose share of the trace grew or fell most (in points of the trace)."""
    share_a = diag_a.double() / diag_a.double().sum().clamp(min=1e-300)
    share_b = diag_b.double() / diag_b.double().sum().clamp(min=1e-300)
    change = share_b - share_a
    order = change.argsort()
    cosine = float(share_a @ share_b / (share_a.norm() * share_b.norm()).clamp(min=1e-300))
    return {"cosine": cosine,
            "gained": [(names[i], float(change[i])) for i in order.flip(0)[:top].tolist() if change[i] > 0],
            "lost": [(names[i], float(change[i])) for i in order[:top].tolist() if change[i] < 0]}


def eigenspace_overlap(vectors_a: torch.Tensor, vectors_b: torch.Tensor, k: int) -> float:
    """How much two top-k eigenspaces (orthonormal columns, (d, >=k)) coincide: the mean squared
    cosine of their principal angles, ||Ua^T Ub||_F^2 / k, 1 for the same subspace, 0 for
    orthogonal ones, about k/d for random ones."""
    a, b = vectors_a[:, :k].double(), vectors_b[:, :k].double()
    return float((a.T @ b).pow(2).sum() / k)


def mcnemar_exact(a_right: torch.Tensor, b_right: torch.Tensor) -> tuple[int, int, float]:
    """(rows only A got right, rows only B got right, two-sided exact p): a binomial test of the
    discordant pairs, the honest test for two classifiers on the same rows."""
    only_a = int((a_right & ~b_right).sum())
    only_b = int((~a_right & b_right).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return only_a, only_b, min(1.0, 2 * tail)


def _r2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R2 along the last dim of (..., n) predictions against (n,) targets."""
    var = ((y - y.mean(-1, keepdim=True)) ** 2).sum(-1)
    return 1 - ((pred - y) ** 2).sum(-1) / var.clamp(min=1e-300)


def paired_bootstrap(pred_a: torch.Tensor, pred_b: torch.Tensor, y: torch.Tensor, rounds: int = BOOTSTRAP_ROUNDS,
                     seed: int = 0) -> tuple[float, float]:
    """A 95% interval of R2(B) - R2(A), resampling the same rows for both (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(y), (rounds, len(y)), generator=gen)  # (rounds, n)
    ya = y.double()[rows]
    delta = _r2(pred_b.double()[rows], ya) - _r2(pred_a.double()[rows], ya)  # (rounds,)
    low, high = torch.quantile(delta, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


@dataclass
class SplitChange:
    """One split: each version's metric, the paired test, churn and flipped rows."""

    split: str
    metric_a: float
    metric_b: float
    test: str  # "McNemar exact" | "paired bootstrap"
    p_value: float | None
    interval: tuple[float, float] | None
    churn: float | None  # share of rows whose predicted class changed
    right_to_wrong: list[int] = field(default_factory=list)  # row numbers within the split
    wrong_to_right: list[int] = field(default_factory=list)
    confusion_delta: list[list[int]] | None = None  # B's confusion counts minus A's: rows true, columns predicted
    classes: list[str] | None = None  # the class of each row and column of `confusion_delta`

    def moved(self, top: int = 3) -> list[str]:
        """The confusion cells that changed most, `true 3, predicted 8: +4`, largest change first."""
        if not self.confusion_delta:
            return []
        cells = [(abs(d), i, j, d) for i, row in enumerate(self.confusion_delta) for j, d in enumerate(row) if d and i != j]
        names = self.classes or [str(k) for k in range(len(self.confusion_delta))]
        return [f"true {names[i]}, predicted {names[j]}: {d:+d}" for _, i, j, d in sorted(cells, key=lambda c: (-c[0], c[1], c[2]))[:top]]

    @property
    def verdict(self) -> str:
        return "a detectable difference" if self.detectable else "no detectable difference"

    @property
    def detectable(self) -> bool:
        if self.p_value is not None:
            return self.p_value < SIGNIFICANCE
        return self.interval is not None and not (self.interval[0] <= 0.0 <= self.interval[1])


@dataclass
class FlippedRow:
    """A row whose answer changed between the versions from right to wrong or back."""

    split: str
    row: int  # within the split
    truth: str
    before: str  # version A's answer
    after: str  # version B's answer
    direction: str  # "right -> wrong" | "wrong -> right"


@dataclass
class VersionDiff:
    """Two versions of one expert: what their records say differs, and what changed in behaviour."""

    expert: str
    version_a: int
    version_b: int
    metric_name: str
    record: list[str]  # `SPEC train.lr: 0.01 -> 0.005`, `UPSTREAM has_loop v1 -> v2`, ...
    splits: list[SplitChange]
    features: dict | None = None  # `feature_shift`, plus `overlap` and `rank`, on the same training rows
    flipped: list[FlippedRow] = field(default_factory=list)  # test split, FLIPPED_SHOWN per direction at most
    # for the page, not the JSON: the flipped rows' inputs as B reads them, and the input columns' names
    flipped_inputs: torch.Tensor | None = field(default=None, repr=False)
    input_names: list[str] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        out = [f"{self.expert} v{self.version_a} -> v{self.version_b}"]
        out += [f"  {line}" for line in self.record] or ["  records: same spec, code, data and upstream"]
        for s in self.splits:
            test = (f"{s.test} p={s.p_value:.3g}" if s.p_value is not None
                    else f"{s.test} 95% interval [{s.interval[0]:+.4f}, {s.interval[1]:+.4f}]")
            line = (f"  {s.split}: {self.metric_name} {s.metric_a:.4f} -> {s.metric_b:.4f} "
                    f"({s.metric_b - s.metric_a:+.4f}), {test}: {s.verdict}")
            if s.churn is not None:
                line += (f"; churn {100 * s.churn:.1f}%, {len(s.right_to_wrong)} right->wrong, "
                         f"{len(s.wrong_to_right)} wrong->right")
            out.append(line)
            if s.moved():
                out.append(f"    errors that moved most ({s.split}, B minus A): " + "; ".join(s.moved()))
        if self.features is not None:
            shift = self.features
            line = (f"  features used (AGOP, same {AGOP_ROWS} training rows at most): diagonal cosine "
                    f"{shift['cosine']:.3f}, top-{shift['rank']} eigenspace overlap {shift['overlap']:.3f}")
            for word in ("gained", "lost"):
                if shift[word]:
                    line += f"; {word}: " + ", ".join(f"{name} ({100 * d:+.1f} pt)" for name, d in shift[word])
            out.append(line)
        return out

    def summary(self, split: str = "test") -> str:
        """One line, as `run` prints it per retrained expert:
        `has_loop v2 vs v1: accuracy +0.4 pt (McNemar p = 0.31, no detectable difference), 3.1% of test rows changed`."""
        from moe_pipeline.inspect.diagnose import metric_change

        s = next(c for c in self.splits if c.split == split)
        test = (f"McNemar p = {s.p_value:.2g}" if s.p_value is not None
                else f"95% interval [{s.interval[0]:+.4f}, {s.interval[1]:+.4f}]")
        line = (f"{self.expert} v{self.version_b} vs v{self.version_a}: {self.metric_name} "
                f"{metric_change(s.metric_b - s.metric_a, self.metric_name)} ({test}, {s.verdict})")
        if s.churn is not None:
            line += f", {100 * s.churn:.1f}% of {split} rows changed"
        return line

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["flipped_inputs"], out["input_names"]
        for entry, s in zip(out["splits"], self.splits):
            entry["detectable"] = s.detectable
        return out


def record_changes(a, b) -> list[str]:
    """What two records differ in, per component, in the words `status` uses."""
    from moe_pipeline.state.fingerprint import spec_diff

    lines = [f"SPEC {line}" for line in spec_diff(a.spec, b.spec)]
    lines += [f"CODE {name} changed" for name in sorted(set(a.code) | set(b.code)) if a.code.get(name) != b.code.get(name)]
    lines += [f"DATA {name} changed" for name in sorted(set(a.data) | set(b.data)) if a.data.get(name) != b.data.get(name)]
    ups_a, ups_b = a.trained_upstream or {}, b.trained_upstream or {}
    for name in sorted(set(ups_a) | set(ups_b)):
        va, vb = ups_a.get(name), ups_b.get(name)
        if va != vb:
            lines.append(f"UPSTREAM {name} {va.label() if va else '-'} -> {vb.label() if vb else '-'}")
    return lines


def diff_versions(view, expert: str, version_a: int | None = None, version_b: int | None = None,
                  splits: tuple[str, ...] = ("val", "test"), features: bool = True) -> VersionDiff:
    """Version B (default: current) against A (default: the highest version below B), on the rows
    both were evaluated on. `features`: also compare their AGOPs (the part that runs the models)."""
    from moe_pipeline.errors import SelectionError
    from moe_pipeline.inspect.confusion import confusion_matrix
    from moe_pipeline.training.metrics import metrics_of

    b = view.record(expert, version_b)
    if version_a is None:
        older = sorted(v for v in view.snapshot()[expert].records if v < b.version)
        if not older:
            raise SelectionError(f"expert '{expert}' has no version before v{b.version} to compare with; "
                                 "name two versions: `diff PIPELINE EXPERT VA VB`")
        version_a = older[-1]
    a = view.record(expert, version_a)
    data, _ = view.expert_data(expert, upstream_versions={u: r.version for u, r in b.upstream.items()})
    outputs_a, outputs_b = view.load_outputs(a), view.load_outputs(b)
    names = data.class_names or [str(k) for k in range(data.n_outputs)]
    changes, flipped, flipped_rows = [], [], []
    for split in splits:
        y = data.y[split]
        logits_a, logits_b = outputs_a[split]["logits"], outputs_b[split]["logits"]
        if not len(logits_a) == len(logits_b) == len(y):
            raise SelectionError(
                f"{expert} v{a.version} and v{b.version} were evaluated on different {split} rows "
                f"({len(logits_a)} and {len(logits_b)}; the data now has {len(y)}): a paired comparison needs "
                "the same rows. Their records: " + ("; ".join(record_changes(a, b)) or "the same"))
        metric_a = metrics_of(data.task, logits_a, y, split)[f"{split}_{b.metric_name}"]
        metric_b = metrics_of(data.task, logits_b, y, split)[f"{split}_{b.metric_name}"]
        if data.task == "classification":
            pred_a, pred_b = logits_a.argmax(1), logits_b.argmax(1)
            right_a, right_b = pred_a == y, pred_b == y
            _, _, p = mcnemar_exact(right_a, right_b)
            delta = confusion_matrix(y, pred_b, data.n_outputs) - confusion_matrix(y, pred_a, data.n_outputs)
            change = SplitChange(split, metric_a, metric_b, "McNemar exact", p, None,
                                 float((pred_a != pred_b).double().mean()),
                                 torch.nonzero(right_a & ~right_b).flatten().tolist(),
                                 torch.nonzero(~right_a & right_b).flatten().tolist(),
                                 delta.tolist(), data.class_names)
            if split == "test":
                for direction, rows in (("right -> wrong", change.right_to_wrong),
                                        ("wrong -> right", change.wrong_to_right)):
                    for row in rows[:FLIPPED_SHOWN]:
                        flipped.append(FlippedRow(split, row, names[int(y[row])], names[int(pred_a[row])],
                                                  names[int(pred_b[row])], direction))
                        flipped_rows.append(row)
            changes.append(change)
        else:
            pred_a = outputs_a[split]["probs"].reshape(len(y), -1)[:, 0]
            pred_b = outputs_b[split]["probs"].reshape(len(y), -1)[:, 0]
            interval = paired_bootstrap(pred_a, pred_b, y.reshape(len(y), -1)[:, 0])
            changes.append(SplitChange(split, metric_a, metric_b, "paired bootstrap", None, interval, None))
    from moe_pipeline.inspect.sections import feature_names

    input_names = feature_names(data, list(data.in_shape))
    shift = _feature_shift(view, a, b, data.x["train"][:AGOP_ROWS], input_names) if features else None
    return VersionDiff(expert, a.version, b.version, b.metric_name, record_changes(a, b), changes, shift,
                       flipped, data.x["test"][flipped_rows] if flipped_rows else None, input_names)


def _feature_shift(view, a, b, rows: torch.Tensor, names: list[str]) -> dict:
    """`feature_shift` of the two versions' AGOP diagonals, and the overlap of their top
    eigenspaces at the larger of their effective ranks."""
    from moe_pipeline.inspect import agop

    k = min(rows[0].numel(), EIGEN_K)
    results = [agop.compute(view.load_model(r)[0], rows, k=k, per_class=False) for r in (a, b)]
    rank = min(max(r.rank95 for r in results), k)
    shift = feature_shift(results[0].diagonal, results[1].diagonal, names)
    shift.update(overlap=eigenspace_overlap(results[0].eigenvectors, results[1].eigenvectors, rank), rank=rank)
    return shift

"""Which expert to fix: a reading expert's errors traced to the upstream experts that were wrong
on the same rows, and each upstream's oracle gain (the reader's metric if that upstream were
perfect, all else unchanged).

`provenance` and `oracle_inputs` are pure functions of tensors. `diagnose_expert` reads one
reading expert's current version, the upstream outputs it was trained or validated on, and
each upstream's own target on the same rows, through a `View`, and runs inference only:
nothing is trained, nothing is written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

SPLITS = ("train", "val", "test")


def metric_change(value: float, metric_name: str) -> str:
    """A change of a metric as every page and line writes it: points for accuracy, else 4 decimals."""
    return f"{100 * value:+.1f} pt" if metric_name == "accuracy" else f"{value:+.4f}"


@dataclass
class UpstreamFinding:
    """One upstream expert of a reader, as a candidate to improve."""

    expert: str
    ref: str  # the input the reader takes from it, e.g. has_loop.probs
    error_rate: float | None  # the upstream's own error rate on the split (classification)
    wrong_on_reader_errors: int | None  # of the reader's errors, rows where this upstream was wrong too
    oracle_metric: float | None  # the reader's metric with this upstream perfect
    gain: float | None  # oracle_metric - the reader's metric
    not_applicable: str | None  # why there is no oracle gain
    train_seconds: float | None  # what retraining this upstream costs (its recorded training time)
    retrained_metric: float | None = None  # `--retrain`: the reader retrained on this upstream perfect
    retrained_gain: float | None = None

    @property
    def gain_per_second(self) -> float | None:
        if self.gain is None or not self.train_seconds:
            return None
        return self.gain / self.train_seconds


@dataclass
class Diagnosis:
    """A reading expert's errors on one split and its upstream experts ranked as what to fix first."""

    expert: str
    version: int
    split: str
    metric_name: str
    metric: float
    rows: int
    errors: int | None  # classification: rows it gets wrong
    errors_with_every_upstream_right: int | None
    upstream: list[UpstreamFinding] = field(default_factory=list)
    headroom_metric: float | None = None  # every probability input perfect at once
    # classification: the reader's confusion counts (rows true, columns predicted) on the rows where
    # every upstream expert was right, and on the rows where at least one was wrong
    confusion_upstream_right: list[list[int]] | None = None
    confusion_upstream_wrong: list[list[int]] | None = None
    classes: list[str] | None = None

    def fix_first(self) -> list[UpstreamFinding]:
        """Upstream experts with an oracle gain, most gain per training second first (then raw gain)."""
        ranked = [u for u in self.upstream if u.gain is not None]
        return sorted(ranked, key=lambda u: (-(u.gain_per_second or 0.0), -u.gain))

    def change(self, value: float) -> str:
        return metric_change(value, self.metric_name)

    def lines(self) -> list[str]:
        """The terminal answer: one line per upstream, ranked, then what has no oracle."""
        head = f"{self.expert} v{self.version} on {self.split}: {self.metric_name} {self.metric:.4f}"
        if self.errors is not None:
            head += (f", {self.errors} error(s) in {self.rows} rows, {self.errors_with_every_upstream_right} of them "
                     "with every upstream expert right")
        out = [head]
        for label, counts in (("every upstream right", self.confusion_upstream_right),
                              ("some upstream wrong", self.confusion_upstream_wrong)):
            if counts is not None:
                total = sum(map(sum, counts))
                right = sum(counts[k][k] for k in range(len(counts)))
                out.append(f"  rows with {label}: {total}, {self.expert} right on {right}"
                           + (f" ({right / total:.1%})" if total else ""))
        for u in self.fix_first():
            blame = (f" (wrong on {u.wrong_on_reader_errors} of {self.errors} {self.expert} errors)"
                     if u.wrong_on_reader_errors is not None and self.errors else "")
            cost = f", {u.train_seconds:.1f} s to train" if u.train_seconds is not None else ""
            retrained = (f"; {self.change(u.retrained_gain)} with {self.expert} retrained on it perfect"
                         if u.retrained_gain is not None else "")
            out.append(f"  {u.expert}: {self.change(u.gain)} if perfect{blame}{cost}{retrained}")
            if u.gain < 0 and u.retrained_gain is None:
                # a reader fitted to an uncertain upstream's probabilities can misread confident ones
                out.append(f"    (below today's: {self.expert} learned {u.expert}'s own probabilities; --retrain "
                           f"measures {self.expert} retrained on a perfect {u.expert})")
        for u in self.upstream:
            if u.gain is None:
                out.append(f"  {u.expert}: n/a ({u.not_applicable})")
        if self.headroom_metric is not None:
            out.append(f"  every probability input perfect: {self.metric_name} {self.headroom_metric:.4f} "
                       f"({self.change(self.headroom_metric - self.metric)})")
        return out

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fix_first"] = [u.expert for u in self.fix_first()]
        return out


def provenance(reader_wrong: torch.Tensor, upstream_wrong: dict[str, torch.Tensor]) -> dict[str, int]:
    """Of the reader's wrong rows (n,) bool, how many each upstream (n,) bool was wrong on too."""
    return {name: int((reader_wrong & wrong).sum()) for name, wrong in upstream_wrong.items()}


def oracle_inputs(x: torch.Tensor, start: int, stop: int, target: torch.Tensor, task: str) -> torch.Tensor:
    """x (n, d) with columns start:stop (an upstream's probabilities) replaced by what a perfect
    upstream would output: its target as one-hot probabilities (classification) or its values."""
    out = x.clone()
    width = stop - start
    if task == "classification":
        out[:, start:stop] = torch.nn.functional.one_hot(target.long(), width).to(x.dtype)
    else:
        out[:, start:stop] = target.reshape(len(target), -1).to(x.dtype)
    return out


def diagnose_expert(view, expert: str, split: str = "test", retrain: bool = False) -> Diagnosis:
    """The diagnosis of one reading expert's current version on `split` (inference only).

    `retrain`: also retrain the reader in memory (its own seeds and settings, nothing registered)
    with each upstream's probabilities perfect in every split, and measure it on `split` with them
    perfect: what the reader could learn from a perfect upstream, beyond what it does with one."""
    from moe_pipeline.errors import SelectionError
    from moe_pipeline.pipeline import graph as g
    from moe_pipeline.training.metrics import metrics_of
    from moe_pipeline.training.train import infer

    if split not in SPLITS:
        raise SelectionError(f"--split must be train, val or test, not {split!r}")
    ups = list(g.upstream(view.graph, expert))
    if not ups:
        raise SelectionError(f"expert '{expert}' reads no other expert: there is nothing upstream to diagnose")
    record = view.record(expert)
    model, _ = view.load_model(record)
    data, _ = view.expert_data(expert, upstream_versions={u: r.version for u, r in record.upstream.items()})
    x, y = data.x[split], data.y[split]
    metric_name = record.metric_name

    def metric(inputs: torch.Tensor) -> float:
        return metrics_of(data.task, infer(model, inputs, data.task)["logits"], y, split)[f"{split}_{metric_name}"]

    actual = metric(x)
    reader_wrong = (infer(model, x, data.task)["logits"].argmax(1) != y) if data.task == "classification" else None
    findings, wrong, oracle_all = [], {}, x.clone()
    for up in ups:
        up_data, _ = view.expert_data(up)
        up_record = view.current()[up]
        up_probs = view.load_outputs(record_of(view, up, record))[split]["probs"]
        target = up_data.y[split]
        error_rate = None
        if up_data.task == "classification":
            wrong[up] = up_probs.argmax(1) != target
            error_rate = float(wrong[up].double().mean())
        for block in (b for b in data.blocks if b.ref.partition(".")[0] == up):
            kind = block.ref.partition(".")[2]
            finding = UpstreamFinding(up, block.ref, error_rate, None, None, None, None,
                                      up_record.train_seconds if up_record else None)
            if kind != "probs":
                finding.not_applicable = (f"reads {block.ref}: a perfect expert has {kind} of no one value, only "
                                          "its answer; read its probs to measure this")
            elif x.dim() != 2:
                finding.not_applicable = f"{expert} reads its inputs as an image, not as columns"
            else:
                oracle = oracle_inputs(x, block.start, block.stop, target, up_data.task)
                finding.oracle_metric = metric(oracle)
                finding.gain = finding.oracle_metric - actual
                if retrain:
                    finding.retrained_metric = _retrained(view, expert, record, data, block, up_data, split)
                    finding.retrained_gain = finding.retrained_metric - actual
                oracle_all = oracle_inputs(oracle_all, block.start, block.stop, target, up_data.task)
            findings.append(finding)
    counts = provenance(reader_wrong, wrong) if reader_wrong is not None else {}
    for finding in findings:
        finding.wrong_on_reader_errors = counts.get(finding.expert)
    any_wrong = torch.zeros(len(y), dtype=torch.bool)
    for w in wrong.values():
        any_wrong |= w
    has_oracle = any(f.gain is not None for f in findings)
    split_counts: dict[str, list[list[int]] | None] = {"right": None, "wrong": None}
    if reader_wrong is not None:
        from moe_pipeline.inspect.confusion import confusion_matrix

        pred = infer(model, x, data.task)["logits"].argmax(1)
        split_counts = {"right": confusion_matrix(y[~any_wrong], pred[~any_wrong], data.n_outputs).tolist(),
                        "wrong": confusion_matrix(y[any_wrong], pred[any_wrong], data.n_outputs).tolist()}
    return Diagnosis(
        expert=expert, version=record.version, split=split, metric_name=metric_name, metric=actual, rows=len(y),
        errors=int(reader_wrong.sum()) if reader_wrong is not None else None,
        errors_with_every_upstream_right=int((reader_wrong & ~any_wrong).sum()) if reader_wrong is not None else None,
        upstream=findings, headroom_metric=metric(oracle_all) if has_oracle else None,
        confusion_upstream_right=split_counts["right"], confusion_upstream_wrong=split_counts["wrong"],
        classes=data.class_names)


def oracle_data(data, block, up_data):
    """The reader's data with one upstream's probability columns perfect in every split."""
    import dataclasses

    x = {s: oracle_inputs(data.x[s], block.start, block.stop, up_data.y[s], up_data.task) for s in SPLITS}
    return dataclasses.replace(data, x=x)


def _retrained(view, expert: str, record, data, block, up_data, split: str) -> float:
    from moe_pipeline.state.fingerprint import training_seeds
    from moe_pipeline.training.metrics import metrics_of
    from moe_pipeline.training.train import infer, train_expert

    spec = view.pipeline.experts[expert]
    init_seed, order_seed = training_seeds(record.spec)
    perfect = oracle_data(data, block, up_data)
    model = train_expert(spec.model, spec.train, view.pipeline.resources_for(expert), perfect, init_seed,
                         order_seed=order_seed).model
    logits = infer(model, perfect.x[split], data.task)["logits"]
    return metrics_of(data.task, logits, data.y[split], split)[f"{split}_{record.metric_name}"]


def record_of(view, upstream: str, reader_record):
    """The upstream version whose stored outputs the reader was trained or validated on."""
    ref = reader_record.upstream.get(upstream)
    return view.record(upstream, ref.version) if ref is not None else view.current()[upstream]

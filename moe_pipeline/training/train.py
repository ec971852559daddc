"""Train one expert: a plain, seeded PyTorch loop, read top to bottom.

AdamW (or Adam/SGD), mini-batches with gradient accumulation when the memory budget
asks for it, early stopping on validation loss, metrics per epoch. It returns tensors
and numbers; it knows nothing of YAML, MLflow or other experts.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from moe_pipeline.data.store import SPLITS
from moe_pipeline.data.inputs import ExpertData
from moe_pipeline.data.rowfile import RowFile
from moe_pipeline.training.batches import Sink, epoch_batches, epoch_steps, first_rows, infer_into, row_chunks
from moe_pipeline.training.metrics import ChunkedMetrics, metrics_of
from moe_pipeline.training.memory import PeakRSS, fit_micro_batch
from moe_pipeline.errors import MemoryBudgetError, TrainingError
from moe_pipeline.training.models import build_model, first_layer, parameter_count

EVAL_CHUNK = 4096  # rows per inference chunk; bounds memory on large splits


@dataclass
class TrainResult:
    """What one training gives back: the model with its best-epoch weights, history, metrics, outputs."""

    model: nn.Module  # on cpu, best weights loaded
    initial_first_layer: torch.Tensor  # first layer's weights before training (Neural Feature Ansatz)
    history: list[dict[str, float]]  # one dict per epoch
    metrics: dict[str, float]  # final train_/val_/test_ metrics
    outputs: dict[str, dict[str, torch.Tensor]]  # split -> logits/probs/embedding
    seconds: float
    peak_memory_mb: float
    micro_batch: int
    device: str
    epochs_run: int
    init_digest: str = ""  # sha256 of the initial weights
    order_digest: str = ""  # sha256 of every epoch's batch order


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast where the GPU supports it (precision auto or bf16); fp32 elsewhere."""
    use_bf16 = device.type == "cuda" and precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return nn.functional.cross_entropy
    return lambda out, y: nn.functional.mse_loss(out.float().reshape(y.shape), y)


@torch.no_grad()
def infer(model: nn.Module, x: torch.Tensor, task: str, device: torch.device | None = None,
          precision: str = "fp32", chunk: int = EVAL_CHUNK) -> dict[str, torch.Tensor]:
    """Embedding, logits and probs of `model` on x, in chunks; returned on cpu in float32."""
    device = device or torch.device("cpu")
    model.eval()
    embeddings, logits = [], []
    for start in range(0, len(x), chunk):
        rows = x[start:start + chunk].to(device)
        with autocast_for(device, precision):
            emb = model.body(rows)
            out = model.head(emb)
        embeddings.append(emb.float().cpu())
        logits.append(out.float().cpu())
    emb_all = torch.cat(embeddings) if embeddings else torch.empty(0)
    logits_all = torch.cat(logits) if logits else torch.empty(0)
    probs = logits_all.softmax(dim=1) if task == "classification" else logits_all.clone()  # regression: the value
    return {"embedding": emb_all, "logits": logits_all, "probs": probs}


def infer_chunk(model: nn.Module, rows: torch.Tensor, task: str, device: torch.device, precision: str
                ) -> dict[str, torch.Tensor]:
    """`infer` of one chunk of rows."""
    return infer(model, rows, task, device, precision, chunk=max(1, len(rows)))


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, device: torch.device, precision: str, chunk: int) -> torch.Tensor:
    """Logits only, in chunks, on cpu: the per-epoch validation needs no embedding or probs."""
    model.eval()
    with autocast_for(device, precision):
        return torch.cat([model(rows.to(device)).float().cpu() for rows in row_chunks(x, chunk)])


def _optimizer(name: str, params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    # torch's fused kernel updates every parameter in one op per step; on CPU its default is a
    # Python loop of several ops per parameter: a small MLP's step is ~28% faster fused. Same
    # arithmetic, rounded differently in the last bits; as deterministic as the loop.
    fused = device.type in ("cpu", "cuda")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, fused=fused)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, fused=fused)


def _cuda_step_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, x, y, task, device,
                     precision) -> Callable[[int], float]:
    """measure(micro) -> peak bytes of training with that micro-batch on `device`, the weights
    and optimiser state put back afterwards.

    It runs what training's peak is made of: a step (so the optimiser's state exists), then two
    accumulated micro-batches (the second's forward and backward while the first's gradients
    and the optimiser state are held), then the step with its temporaries."""
    saved = _cpu_copy(model)

    def micro_step(micro: int) -> None:
        with autocast_for(device, precision):
            loss = loss_fn(task)(model(x[:micro].to(device)), y[:micro].to(device))
        loss.backward()

    def measure(micro: int) -> float:
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            micro_step(micro)
            optimizer.step()
            micro_step(micro)
            micro_step(micro)
            optimizer.step()
            used = torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            used = float("inf")
        finally:
            model.zero_grad(set_to_none=True)
            optimizer.state.clear()
            model.load_state_dict(saved)
        return used
    return measure


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights, copied to host memory: the best epoch's copy takes no device memory."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def train_expert(model_spec: Any, train_spec: Any, resources: Any, data: ExpertData, seed: int,
                 progress: Callable[[int, int, dict[str, float]], None] | None = None,
                 measure: Callable[[int], float] | None = None, order_seed: int | None = None,
                 outputs_to: Callable[[str], Sink] | None = None) -> TrainResult:
    """Train one expert on `data`: `seed` sets the initial weights and, unless `order_seed` is
    given, the batch order too. `measure` overrides the memory measurement (for tests).
    `outputs_to(split)`: where each split's stored outputs are written a chunk at a time (data
    on disk); the result's `outputs` is then empty."""
    with _threads(getattr(resources, "num_cpus", None)):
        return _train(model_spec, train_spec, resources, data, seed, progress, measure,
                      seed if order_seed is None else order_seed, outputs_to)


@contextlib.contextmanager
def _threads(num_cpus: int | None):
    """torch's intra-op threads follow `resources.num_cpus` while one expert trains: a Ray task
    uses the cores it asked for, and a sequential run with the same setting computes the same bits."""
    before = torch.get_num_threads()
    if num_cpus:
        torch.set_num_threads(num_cpus)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(model_spec: Any, train_spec: Any, resources: Any, data: ExpertData, seed: int,
           progress: Callable[[int, int, dict[str, float]], None] | None,
           measure: Callable[[int], float] | None, order_seed: int,
           outputs_to: Callable[[str], Sink] | None = None) -> TrainResult:
    started = time.perf_counter()
    device = resolve_device(resources.device)
    precision = resources.precision
    check_fits(model_spec, data, resources.max_memory_gb)
    torch.manual_seed(seed)
    model = build_model(model_spec, data.in_shape, data.n_outputs)
    init_digest = tensor_digest(model.state_dict().values())
    layer = first_layer(model)
    initial_first_layer = layer.weight.detach().clone() if layer is not None else torch.empty(0)
    model.to(device)
    x_train, y_train = data.x["train"], data.y["train"]
    criterion = loss_fn(data.task)
    batch_size = min(train_spec.batch_size, len(x_train))

    optimizer = _optimizer(train_spec.optimizer, model.parameters(), train_spec.lr, train_spec.weight_decay, device)
    budget = resources.max_memory_gb * 2**30
    if measure is None and device.type == "cuda":
        measure = _cuda_step_bytes(model, optimizer, first_rows(x_train, batch_size), y_train, data.task, device,
                                   precision)
    micro = fit_micro_batch(batch_size, measure, budget) if measure is not None else batch_size
    # Inference keeps no graph, so a chunk of `micro` rows needs less than a training step did:
    # validation and the stored outputs never raise the peak above training's own (on a whole
    # split at once they did: 3x for the digits CNN).
    eval_chunk = micro

    params = list(model.parameters())
    generator = torch.Generator().manual_seed(order_seed)
    orders = hashlib.sha256()  # of every epoch's batch order: opacity checks what its runs shared
    history: list[dict[str, float]] = []
    best = (float("inf"), _cpu_copy(model), 0)
    epochs_without_gain = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    autocast = autocast_for(device, precision)
    # Per-step values are written into buffers made once, and reduced once per epoch: no copy
    # to the host per step (it would wait for a GPU every step), a few ops per step instead of a
    # dozen (on a small MLP those cost as much as its step), and no small tensors kept per step
    # (held between a step's large temporaries, they fragment the heap: up to +40% resident memory).
    buffer_rows = shuffle_buffer_rows(resources, x_train)
    steps = epoch_steps(x_train, batch_size, buffer_rows)
    order = torch.empty(len(x_train), dtype=torch.long)  # the epoch's order of the train rows
    step_norms = torch.zeros(steps, len(params), device=device)  # each parameter's gradient norm
    loss_sum = torch.zeros((), device=device)  # of each micro-batch's loss x its batch's rows
    predicted = torch.zeros(len(x_train), dtype=torch.long, device=device)  # in the epoch's order
    with PeakRSS() as rss:
        for epoch in range(1, train_spec.epochs + 1):
            model.train()
            step_norms.zero_()  # a parameter without a gradient in a step counts 0 there
            loss_sum.zero_()
            at = 0  # rows of the epoch done
            for step, (batch, x_batch) in enumerate(epoch_batches(x_train, batch_size, generator, buffer_rows)):
                n = len(batch)
                order[at:at + n] = batch
                optimizer.zero_grad(set_to_none=True)
                # gradient accumulation over micro-batches (split only when needed: on a tiny MLP
                # a split costs as much as the step's own arithmetic)
                parts = list(zip(batch.split(micro), x_batch.split(micro))) if micro < n else [(batch, x_batch)]
                for part, (rows, x_rows) in enumerate(parts):
                    target = y_train[rows].to(device)
                    with autocast:
                        out = model(x_rows.to(device))
                        loss = criterion(out, target)
                        if len(parts) > 1:  # a micro-batch's share of the batch's mean loss
                            loss = loss * (len(rows) / n)
                    loss.backward()
                    # training metrics from the batches themselves: no second pass over the data
                    loss_sum.add_(loss.detach().float(), alpha=n)
                    if data.task == "classification":
                        begin = at + part * micro
                        torch.argmax(out.detach(), dim=1, out=predicted[begin:begin + len(rows)])
                at += n
                norms = torch._foreach_norm([p.grad for p in params if p.grad is not None])
                torch.stack(norms, out=step_norms[step, :len(norms)])
                optimizer.step()
            orders.update(order.numpy().tobytes())
            record = {"epoch": float(epoch), "grad_norm": float(step_norms.square().sum(1).sqrt().mean()),
                      "train_loss": float(loss_sum) / len(x_train)}
            if not math.isfinite(record["train_loss"]):  # the weights are garbage from here on: never register them
                raise TrainingError(f"the training loss became {record['train_loss']} in epoch {epoch}; nothing "
                                    "registered. Lower train.lr, or look for NaN/inf in the inputs and targets")
            if data.task == "classification":  # the predictions line up with y_train[order]
                record["train_accuracy"] = float((predicted.cpu() == y_train[order]).sum()) / len(x_train)
            val_logits = _logits(model, data.x["val"], device, precision, eval_chunk)
            record.update(metrics_of(data.task, val_logits, data.y["val"], "val"))
            history.append(record)
            if progress:
                progress(epoch, train_spec.epochs, record)
            if record["val_loss"] < best[0] - 1e-7:
                best = (record["val_loss"], _cpu_copy(model), epoch)
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
                if train_spec.patience is not None and epochs_without_gain >= train_spec.patience:
                    break
    if best[2] == 0:
        raise TrainingError("the validation loss was never finite; nothing registered. Lower train.lr, or look "
                            "for NaN/inf in the validation inputs and targets")
    model.load_state_dict(best[1])
    metrics: dict[str, float] = {"best_epoch": float(best[2])}
    if outputs_to is None:
        outputs = {split: infer(model, data.x[split], data.task, device, precision, eval_chunk) for split in SPLITS}
        for split in SPLITS:
            if len(data.y[split]):
                metrics.update(metrics_of(data.task, outputs[split]["logits"], data.y[split], split))
    else:  # written a chunk at a time, the metrics accumulated on the way
        outputs = {}
        for split in SPLITS:
            chunked = ChunkedMetrics(data.task, data.y[split]) if len(data.y[split]) else None
            infer_into(lambda rows: infer_chunk(model, rows, data.task, device, precision), data.x[split],
                       eval_chunk, outputs_to(split), chunked)
            if chunked is not None:
                metrics.update(chunked.result(split))
    if device.type == "cuda":  # after the stored outputs' inference: the budget covers it too
        peak = torch.cuda.max_memory_allocated(device)
    else:  # RSS growth misses memory the allocator already held: never report less than the step's own state
        peak = max(rss.peak_growth, step_bytes(model, first_rows(x_train, micro)))
    model.to("cpu")
    return TrainResult(
        model=model, initial_first_layer=initial_first_layer.cpu(), history=history, metrics=metrics,
        outputs=outputs, seconds=time.perf_counter() - started, peak_memory_mb=peak / 2**20,
        micro_batch=micro, device=str(device), epochs_run=len(history), init_digest=init_digest,
        order_digest=orders.hexdigest())


def shuffle_buffer_rows(resources: Any, x: Any) -> int | None:
    """Rows of the shuffle buffer of inputs on disk: a quarter of `resources.max_host_memory_gb`
    (the rest holds the targets, the epoch's order and predictions, and a chunk of outputs)."""
    budget = getattr(resources, "max_host_memory_gb", None)
    if not isinstance(x, RowFile) or not budget:
        return None
    return max(1, int(budget * 2**30 / 4) // x.row_bytes())


def tensor_digest(tensors) -> str:
    """sha256 of tensors' bytes, in order: which initial weights (or data) a run started from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def step_bytes(model: nn.Module, batch: torch.Tensor) -> float:
    """A lower bound of one training step's memory: weights, gradients and Adam's two moments
    (4 float32 copies of every parameter) plus the input batch and every layer's output for it."""
    params = sum(p.numel() for p in model.parameters())
    activations = 0

    def count(_module, _inputs, output) -> None:
        nonlocal activations
        activations += output.numel() if isinstance(output, torch.Tensor) else 0

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(batch.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return 4.0 * (4 * params + batch.numel() + activations)


def check_fits(model_spec: Any, data: ExpertData, max_memory_gb: float) -> None:
    """Refuse, before allocating anything, a model whose weights, gradients and Adam state
    alone (4 float32 copies of every parameter) exceed the budget."""
    params = parameter_count(model_spec, data.in_shape, data.n_outputs)
    need = 4 * 4 * params
    if need > max_memory_gb * 2**30:
        raise MemoryBudgetError(f"the model has {params:,} parameters: weights, gradients and optimiser state need "
                                f"{need / 2**30:.1f} GB, over resources.max_memory_gb {max_memory_gb}; make it smaller")


def release() -> None:
    """Free caches between experts so peak memory is the largest expert, not the sum.

    Tensors are freed by reference counting as soon as an expert's objects go; the collector
    is only for cycles, which the young generations hold. A full collection walks every
    object mlflow and torch created: 0.4 s a call (cProfile of a run of 8 experts)."""
    import gc

    gc.collect(1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

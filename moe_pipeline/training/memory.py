"""Peak-memory measurement and the micro-batch search that keeps `max_memory_gb` a promise.

`fit_micro_batch` is pure logic over an injected `measure(batch) -> bytes`, so it is tested
without a GPU. `PeakRSS` samples this process's resident memory on CPU, where there is no
allocator counter to read. `reset_peak`/`peak_rss_bytes` read the kernel's own high-water mark
of the process (what the run table reports), and `killed_message` says what a training
process killed by SIGKILL most likely met.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Callable

from moe_pipeline.errors import MemoryBudgetError


def fit_micro_batch(batch_size: int, measure: Callable[[int], float], budget_bytes: float) -> int:
    """Largest micro-batch (batch_size halved 0..k times) whose measured step fits the budget.

    The effective batch stays `batch_size`: the trainer accumulates gradients over
    ceil(batch_size / micro) micro-batches.
    """
    micro = batch_size
    while True:
        used = measure(micro)
        if used <= budget_bytes:
            return micro
        if micro == 1:
            raise MemoryBudgetError(
                f"one training step with a micro-batch of 1 needs {used / 2**30:.2f} GiB, more than "
                f"max_memory_gb={budget_bytes / 2**30:.2f}; raise resources.max_memory_gb or use a smaller model")
        micro = max(1, micro // 2)


def accumulation_steps(batch_size: int, micro: int) -> int:
    return math.ceil(batch_size / micro)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the lifetime peak, coarse but honest
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager: peak growth of resident memory over the block, sampled every 10 ms.

    Sampling more often costs the training loop time (the sampler thread takes the GIL).
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak_growth = 0

    def __enter__(self) -> "PeakRSS":
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)  # not sleep: leaving the block need not wait out an interval

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_growth = self._peak - self._base


def reset_peak() -> None:
    """Start a new high-water mark of this process's resident memory at its current size (Linux:
    /proc/self/clear_refs; elsewhere the lifetime peak stays, coarse but honest)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """The most resident memory this process has held since `reset_peak` (or since it started)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def killed_message(doing: str, peak: int, total: int) -> str:
    """Why a training process ended by SIGKILL, from the peak it had reached: near the machine's
    memory, the kernel's out-of-memory killer; far below it, someone or something else."""
    reached = f"it had reached {peak / 2**30:.1f} GiB resident" + (f" of this machine's {total / 2**30:.1f} GiB"
                                                                   if total else "")
    if total and peak >= total / 2:
        return (f"the training process was killed (SIGKILL) while {doing}; {reached}, so most likely the kernel's "
                "out-of-memory killer ended it. A source is read whole into memory unless "
                "resources.max_host_memory_gb is set (parquet and npy sources are then read a block at a time), "
                "and resources.max_memory_gb bounds only a training step (the micro-batch): set "
                "max_host_memory_gb, train on a sample or fewer fields, or on a machine with more memory")
    return f"the training process was killed (SIGKILL) while {doing}; {reached} (not near the machine's memory)"

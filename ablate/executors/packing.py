"""``--per-gpu auto``: how many runs share one GPU, decided from measured memory.

A sweep starts with one run per GPU. Workers report the GPU memory their run holds
(``peak_mem_mb``: the caching allocator's peak reservation, after every epoch and at the
end); past runs of the same model and dataset in the store give a starting hint. Each GPU
then gets ``floor(fraction * total / (peak + context))`` slots, at most ``cap`` — the
CUDA context of every extra worker process (a few hundred MB that torch does not count)
is part of the price of a slot. The decision is the pure function :func:`slots_for`, so it
is tested without a GPU; the GPUs' sizes come from :func:`ablate.devices.gpu_memory_mb`
and past peaks from :meth:`ablate.store.Store.peak_mem_mb`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FRACTION = 0.8  # of the GPU's memory that packed runs may fill
CAP = 8  # runs per GPU at most: past this, kernels queue and nothing is gained
CONTEXT_MB = 500.0  # per worker process: CUDA context + cuBLAS workspace, invisible to torch's counters


def slots_for(total_mb: float | None, peak_mb: float | None, fraction: float = FRACTION, cap: int = CAP,
              context_mb: float = CONTEXT_MB) -> int:
    """Runs that fit on one GPU of ``total_mb`` when each holds ``peak_mb`` at most.

    Unknown size or peak gives 1 (measure first); the answer is always in ``[1, cap]``.
    """
    if not total_mb or total_mb <= 0 or peak_mb is None or peak_mb < 0:
        return 1
    per_run = peak_mb + context_mb
    return max(1, min(cap, math.floor(fraction * total_mb / per_run)))


@dataclass
class AutoPack:
    """The running state of ``--per-gpu auto``: GPU sizes, the peaks seen, OOM ceilings."""

    total_mb: dict[str, float]
    hint_mb: float | None = None
    fraction: float = FRACTION
    cap: int = CAP
    peak_mb: dict[str, float] = field(default_factory=dict)
    ceiling: dict[str, int] = field(default_factory=dict)  # after an OOM back-off: never grow past it

    def observe(self, gpu: str, peak_mb: float | None) -> None:
        if peak_mb is not None:
            self.peak_mb[gpu] = max(self.peak_mb.get(gpu, 0.0), float(peak_mb))

    def want(self, gpu: str) -> int:
        peak = self.peak_mb.get(gpu, self.hint_mb)
        n = slots_for(self.total_mb.get(gpu), peak, self.fraction, self.cap)
        return min(n, self.ceiling.get(gpu, n))

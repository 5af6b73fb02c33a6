"""The batched OT plans as two Triton kernels: one program per problem, every iteration
in registers.

Why: a LightGCNOT step solves a few dozen tiny problems (``k x k``, ``k = 1 + k1 + k2``,
6 by default) with 40 IPOT iterations for W and 5 x 20 for GW. In PyTorch each log-domain
iteration is ~19 CUDA kernels (two ``logsumexp`` of ~6 each, and the adds), so one step's
plans are ~2,700 kernels of a few microseconds each, even replayed from a CUDA graph. Here
the W plan is one kernel and the GW plan another, whatever the iteration counts.

The arithmetic is :func:`models.ot.solvers.ipot` and :func:`models.ot.solvers.gw_plan`
step for step (log domain, max-shifted log-sum-exp, the same optional rounding to the
marginals, a compile-time switch of the kernels);
tests check both kernels against them in Triton's interpreter, and
:class:`models.lightgcn_ot.LightGCNOT` compares them again on the first batch on the GPU
and falls back to PyTorch on any difference. Float32, and at most 64 nodes a side:
anything else goes to PyTorch (:func:`supported`).

Kernels are built on first use, so importing this module needs no Triton, and
``TRITON_INTERPRET=1`` set before that first use runs them on the CPU (tests).
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torch import Tensor

MAX_SIDE = 64


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or broken for this torch: PyTorch it is
        return False
    return True


def supported(*tensors: Tensor | None) -> bool:
    """Whether the kernels can take these inputs: float32, sides of at most ``MAX_SIDE``,
    on CUDA (or on the CPU under Triton's interpreter), and Triton importable."""
    ts = [t for t in tensors if t is not None]
    if not ts or not triton_available():
        return False
    on_device = all(t.is_cuda for t in ts) or (interpreted() and all(t.device.type == "cpu" for t in ts))
    return on_device and all(t.dtype == torch.float32 and max(t.shape[-2:]) <= MAX_SIDE for t in ts)


def _block(*sides: int) -> int:
    # tl.dot needs every dimension >= 16
    return max(16, 1 << (max(sides) - 1).bit_length())


def _warps(block: int) -> int:
    """One warp for a 16 x 16 problem (its row and column reductions stay inside the warp,
    no shared-memory round trips between the iterations), more for larger ones."""
    return {16: 1, 32: 2}.get(block, 4)


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """The two kernels, compiled (or interpreted) under the current ``TRITON_INTERPRET``."""
    import importlib

    from models.ot import _triton_kernels as k

    if k.INTERPRET != interpret:
        k = importlib.reload(k)
    return k.ipot_kernel, k.gw_kernel


def _launch_args(n: int, m: int, beta: float):
    return dict(neg_inv_beta=-1.0 / beta, log_a=-math.log(n), log_b=-math.log(m), a=1.0 / n, b=1.0 / m)


def ipot(c: Tensor, beta: float = 0.5, n_iter: int = 40, round: bool = False) -> Tensor:
    """:func:`models.ot.solvers.ipot` (one inner step, from the all-ones plan) in one kernel."""
    n, m = c.shape[-2:]
    flat = c.detach().reshape(-1, n, m).contiguous()
    out = torch.empty_like(flat)
    if flat.shape[0]:
        ipot_kernel, _ = _kernels(interpreted())
        block = _block(n, m)
        ipot_kernel[(flat.shape[0],)](flat, out, n, m, n_iter=n_iter, BLOCK=block, ROUND=bool(round),
                                      num_warps=_warps(block), **_launch_args(n, m, beta))
    return out.view(c.shape)


def gw_plan(cs: Tensor, ct: Tensor, beta: float = 0.1, n_outer: int = 5, n_inner: int = 20,
            round: bool = False) -> Tensor:
    """:func:`models.ot.solvers.gw_plan` in one kernel; batch dims broadcast as there."""
    n, m = cs.shape[-1], ct.shape[-1]
    batch = torch.broadcast_shapes(cs.shape[:-2], ct.shape[:-2])
    cs_b = cs.detach().expand(*batch, n, n).reshape(-1, n, n).contiguous()
    ct_b = ct.detach().expand(*batch, m, m).reshape(-1, m, m).contiguous()
    out = torch.empty(cs_b.shape[0], n, m, dtype=cs.dtype, device=cs.device)
    if out.shape[0]:
        _, gw_kernel = _kernels(interpreted())
        block = _block(n, m)
        gw_kernel[(out.shape[0],)](cs_b, ct_b, out, n, m, n_outer=n_outer, n_inner=n_inner, BLOCK=block,
                                   ROUND=bool(round), num_warps=_warps(block), **_launch_args(n, m, beta))
    return out.view(*batch, n, m)

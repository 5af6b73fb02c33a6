"""The Triton kernels behind :mod:`models.ot.triton_plans` (imported only when they are first
launched). Triton decides when a function is decorated whether it runs compiled or
interpreted (``TRITON_INTERPRET=1``), so :func:`models.ot.triton_plans._kernels` reloads this
module when that setting has changed since it was imported."""

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _tile(n, m, BLOCK: tl.constexpr):
    """This program's problem and its ``[BLOCK, BLOCK]`` tile: ``(pid, rows, cols, row_ok,
    col_ok)``, the masks marking the ``n x m`` entries that are not padding."""
    pid = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    return pid, rows, cols, rows < n, cols < m


@triton.jit
def _ipot(log_k, row_ok, col_ok, log_a, log_b, a, b, n_iter, BLOCK: tl.constexpr, ROUND: tl.constexpr):
    """IPOT from the all-ones plan on the kernel ``exp(log_k)``, then, if ``ROUND``, rounding
    onto the marginals (``solvers.ipot(round=...)``; GSC does not round).
    Padding holds -1e30 ("log 0", finite so that a max-shift never computes -inf - -inf)
    and stays there; returns the plan (0 on padding). 1.1754943508222875e-38 is float32's
    smallest normal, the ``tiny`` of ``solvers.round_to_marginals``."""
    ok = row_ok & col_ok
    log_t = tl.where(ok, 0.0, -1.0e30)
    log_sigma = tl.where(col_ok, log_b, -1.0e30)
    for _ in range(n_iter):
        log_q = tl.where(ok, log_k + log_t, -1.0e30)
        x = log_q + log_sigma
        mx = tl.max(x, axis=1)
        lse_r = mx + tl.log(tl.sum(tl.exp(x - mx[:, None]), axis=1))
        log_delta = tl.where(row_ok, log_a - lse_r[:, None], -1.0e30)
        y = log_q + log_delta
        my = tl.max(y, axis=0)
        lse_c = my + tl.log(tl.sum(tl.exp(y - my[None, :]), axis=0))
        log_sigma = tl.where(col_ok, log_b - lse_c[None, :], -1.0e30)
        log_t = tl.where(ok, log_delta + log_q + log_sigma, -1.0e30)
    t = tl.where(ok, tl.exp(log_t), 0.0)
    if ROUND:  # round_to_marginals (Altschuler et al. 2017); decided at compile time
        row = tl.sum(t, axis=1)[:, None]
        t = t * tl.minimum(a / tl.maximum(row, 1.1754943508222875e-38), 1.0)
        col = tl.sum(t, axis=0)[None, :]
        t = t * tl.minimum(b / tl.maximum(col, 1.1754943508222875e-38), 1.0)
        err_r = tl.where(row_ok, tl.maximum(a - tl.sum(t, axis=1)[:, None], 0.0), 0.0)
        err_c = tl.where(col_ok, tl.maximum(b - tl.sum(t, axis=0)[None, :], 0.0), 0.0)
        norm = tl.maximum(tl.sum(err_r, axis=0), 1.1754943508222875e-38)  # [1]
        t = tl.where(ok, t + err_r * err_c / norm[None, :], 0.0)
    return t


@triton.jit
def ipot_kernel(c_ptr, out_ptr, n, m, neg_inv_beta, log_a, log_b, a, b, n_iter, BLOCK: tl.constexpr,
                ROUND: tl.constexpr):
    pid, rows, cols, row_ok, col_ok = _tile(n, m, BLOCK)
    offs = pid * n * m + rows * m + cols
    c = tl.load(c_ptr + offs, mask=row_ok & col_ok, other=0.0)
    t = _ipot(c * neg_inv_beta, row_ok, col_ok, log_a, log_b, a, b, n_iter, BLOCK, ROUND)
    tl.store(out_ptr + offs, t, mask=row_ok & col_ok)


@triton.jit
def gw_kernel(cs_ptr, ct_ptr, out_ptr, n, m, neg_inv_beta, log_a, log_b, a, b, n_outer, n_inner,
              BLOCK: tl.constexpr, ROUND: tl.constexpr):
    pid, rows, cols, row_ok, col_ok = _tile(n, m, BLOCK)
    ok = row_ok & col_ok
    cs = tl.load(cs_ptr + pid * n * n + rows * n + cols, mask=row_ok & (cols < n), other=0.0)
    # ct transposed as loaded: ctt[l, j] = ct[j, l]
    ctt = tl.load(ct_ptr + pid * m * m + cols * m + rows, mask=(rows < m) & col_ok, other=0.0)
    gamma = tl.where(ok, a * b, 0.0)  # the product coupling 1/(n m)
    # the constant part of the linearisation, p = 1/n, q = 1/m (padding is 0 in cs and ctt)
    cs2p = tl.sum(cs * cs, axis=1) * a  # (Cs^2 p)_i = sum_k Cs_ik^2 / n
    ct2q = tl.sum(ctt * ctt, axis=0) * b  # (q^T Ct^2^T)_j = sum_l Ct_jl^2 / m
    for _ in range(n_outer):
        # linearise: L = (Cs^2 p) 1^T + 1 (q^T Ct^2^T) - 2 Cs gamma Ct^T, p/q uniform (GSC)
        cg = tl.dot(cs, gamma, input_precision="ieee")
        lin = cs2p[:, None] + ct2q[None, :] - 2.0 * tl.dot(cg, ctt, input_precision="ieee")
        gamma = _ipot(lin * neg_inv_beta, row_ok, col_ok, log_a, log_b, a, b, n_inner, BLOCK, ROUND)
    tl.store(out_ptr + pid * n * m + rows * m + cols, gamma, mask=ok)


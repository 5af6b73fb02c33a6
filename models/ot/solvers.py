r"""Batched optimal-transport solvers in pure torch (no RecBole, no POT).

Everything works on a batch of small problems at once: costs are ``[..., n, m]`` (any
leading batch dimensions, e.g. ``[B, n, m]`` or ``[P, B, n, m]``; structure costs broadcast
against them), marginals are uniform, and every loop runs over iterations, never over the
batch or over nodes. All kernels are evaluated in the log domain, so no ``exp(-C / beta)`` can
underflow to 0 and no division by a vanishing sum can produce inf or NaN.

The algorithms follow GOT (Chen et al., "Graph Optimal Transport for Cross-Domain
Alignment", ICML 2020, https://arxiv.org/abs/2006.14744) and GSC (Han et al.,
"Generative Subgraph Contrast for Self-Supervised Graph Representation Learning",
ECCV 2022, https://arxiv.org/abs/2207.11996); POT (``ot.sinkhorn``, ``ot.emd2``,
``ot.gromov``) is the reference they are tested against.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = [
    "safe_normalize",
    "cosine",
    "cost_matrix",
    "cost_from_cosine",
    "prune_cost",
    "ipot",
    "wasserstein",
    "gw_tensor",
    "gromov_wasserstein",
    "gw_plan",
    "batch_trace_dot",
]


def safe_normalize(x: Tensor, dim: int = -1, eps: float = 1e-6) -> Tensor:
    r"""``x / sqrt(|x|^2 + eps^2)``: smooth everywhere, so zero rows give zero, not NaN.

    ``x / (|x| + 1e-12)`` (the notebook's form) has an undefined gradient at ``x = 0``,
    which ReLU-activated GAT outputs reach; this form has a bounded one (``1 / eps``).
    """
    return x * torch.rsqrt(x.pow(2).sum(dim=dim, keepdim=True) + eps * eps)


def cosine(x: Tensor, y: Tensor, eps: float = 1e-6) -> Tensor:
    """Batched cosine similarity ``[..., n, d] x [..., m, d] -> [..., n, m]``, in ``[-1, 1]``."""
    return torch.matmul(safe_normalize(x, eps=eps), safe_normalize(y, eps=eps).transpose(-1, -2))


def cost_matrix(x: Tensor, y: Tensor, form: str = "exp", tau: float = 0.5) -> Tensor:
    r"""Transport cost between the rows of ``x`` and ``y``.

    * ``form="exp"`` (GSC): :math:`C_{ij} = \exp(-\cos(x_i, y_j)/\tau - s)` with the
      shift :math:`s = \max_{ij}(-\cos/\tau)` per problem (detached), so ``C`` lies in
      ``(0, 1]`` whatever ``tau``; without the shift ``tau = 0.01`` overflows float32.
    * ``form="cos"`` (GOT): :math:`C_{ij} = 1 - \cos(x_i, y_j)`, in ``[0, 2]``.

    Args:
        x: ``[B, n, d]``.
        y: ``[B, m, d]``.
        form: ``"exp"`` or ``"cos"`` (default ``"exp"``).
        tau: temperature of the ``exp`` form (default ``0.5``).
    """
    return cost_from_cosine(cosine(x, y), form, tau)


def cost_from_cosine(cos: Tensor, form: str = "exp", tau: float = 0.5) -> Tensor:
    """:func:`cost_matrix` from precomputed cosines ``[..., n, m]`` (so that several cost
    matrices of one batch are made by one stacked call); the shift is per ``[n, m]`` problem."""
    if form == "exp":
        logits = cos / -tau
        shift = logits.detach().amax(dim=(-2, -1), keepdim=True)
        return torch.exp(logits - shift)
    if form == "cos":
        return 1.0 - cos
    raise ValueError(f"unknown cost form {form!r} (expected 'exp' or 'cos')")


def prune_cost(c: Tensor, beta: float = 0.1) -> Tensor:
    r"""GSC's pruning ``relu(C - (min + beta (max - min)))``, min/max per problem.

    ``beta = 0`` subtracts only the minimum (keeps every entry's ordering).
    """
    if beta is None or beta < 0:
        return c
    lo = c.amin(dim=(-2, -1), keepdim=True)
    hi = c.amax(dim=(-2, -1), keepdim=True)
    return torch.relu(c - (lo + beta * (hi - lo)))


def batch_trace_dot(c: Tensor, t: Tensor) -> Tensor:
    r""":math:`\operatorname{tr}(C^\top T) = \sum_{ij} C_{ij} T_{ij}` per problem -> ``[B]``."""
    return (c * t).sum(dim=(-2, -1))


def ipot(
    c: Tensor,
    beta: float = 0.5,
    n_iter: int = 40,
    n_inner: int = 1,
    log_t0: Tensor | None = None,
) -> Tensor:
    r"""IPOT (Xie et al. 2019, https://arxiv.org/abs/1802.04307), batched and log-domain.

    Proximal point iterations with uniform marginals :math:`a = 1/n`, :math:`b = 1/m`:

    .. math::
        Q = e^{-C/\beta} \odot T^{(t)},\quad
        \delta = \frac{a}{Q\sigma},\ \sigma = \frac{b}{Q^\top \delta}\ (\text{n\_inner times}),\quad
        T^{(t+1)} = \operatorname{diag}(\delta)\, Q\, \operatorname{diag}(\sigma).

    With ``n_iter = 1`` and many inner steps this is Sinkhorn with ``reg = beta``; with
    many outer steps it converges to the unregularised OT plan. The last update fixes
    the column marginals exactly; a final row rescale-and-repair (Altschuler et al.
    2017, "round") makes both marginals exact, so every returned plan is feasible.

    Args:
        c: cost ``[..., n, m]``.
        beta: proximal step (default ``0.5``, GSC).
        n_iter: outer iterations (default ``40``).
        n_inner: Sinkhorn steps per outer iteration (default ``1``).
        log_t0: optional log of the starting plan (default: all ones, as in GOT/GSC).

    Returns:
        The plan ``T`` ``[..., n, m]``.
    """
    n, m = c.shape[-2:]
    log_a = -math.log(n)
    log_b = -math.log(m)
    log_k = c / -beta
    log_t = torch.zeros_like(c) if log_t0 is None else log_t0
    log_sigma = torch.full((*c.shape[:-2], 1, m), log_b, dtype=c.dtype, device=c.device)
    for _ in range(n_iter):
        log_q = log_k + log_t
        for _ in range(n_inner):
            log_delta = log_a - torch.logsumexp(log_q + log_sigma, dim=-1, keepdim=True)
            log_sigma = log_b - torch.logsumexp(log_q + log_delta, dim=-2, keepdim=True)
        log_t = log_delta + log_q + log_sigma
    return round_to_marginals(log_t.exp())


def round_to_marginals(t: Tensor) -> Tensor:
    r"""Project a positive plan onto the uniform-marginal polytope (Altschuler et al. 2017).

    Scale rows down to at most ``1/n``, columns down to at most ``1/m``, then add the
    rank-one repair ``err_r err_c^T / |err_r|_1``. Exact marginals; differentiable a.e.
    """
    n, m = t.shape[-2:]
    a = 1.0 / n
    bm = 1.0 / m
    tiny = torch.finfo(t.dtype).tiny
    row = t.sum(dim=-1, keepdim=True)
    t = t * torch.clamp(a / row.clamp_min(tiny), max=1.0)
    col = t.sum(dim=-2, keepdim=True)
    t = t * torch.clamp(bm / col.clamp_min(tiny), max=1.0)
    err_r = (a - t.sum(dim=-1, keepdim=True)).clamp_min(0.0)
    err_c = (bm - t.sum(dim=-2, keepdim=True)).clamp_min(0.0)
    norm = err_r.sum(dim=-2, keepdim=True).clamp_min(tiny)
    return t + err_r * err_c / norm


def wasserstein(c: Tensor, beta: float = 0.5, n_iter: int = 40, detach_plan: bool = False):
    r"""Wasserstein distance :math:`d_W = \sum_{ij} C_{ij} T_{ij}` with the IPOT plan.

    Returns ``(d [B], T [B, n, m])``. ``detach_plan=True`` stops gradients through the
    iterations (the envelope theorem makes ``T`` the gradient of the optimum anyway).
    """
    t = ipot(c.detach() if detach_plan else c, beta=beta, n_iter=n_iter)
    return batch_trace_dot(c, t), t


def gw_tensor(cs: Tensor, ct: Tensor, gamma: Tensor) -> Tensor:
    r"""The GW linearisation :math:`C_{st} - 2 C_s \gamma C_t^\top` for the square loss.

    :math:`C_{st} = (C_s^{\odot 2} p) 1_m^\top + 1_n (q^\top (C_t^{\odot 2})^\top)` with
    the plan's own marginals ``p = gamma 1``, ``q = gamma^T 1``. Equals
    ``ot.gromov.tensor_product(*ot.gromov.init_matrix(Cs, Ct, p, q), gamma)`` and
    :math:`\langle \cdot, \gamma \rangle` equals ``ot.gromov.gwloss``.
    """
    p = gamma.sum(dim=-1, keepdim=True)  # [..., n, 1]
    q = gamma.sum(dim=-2, keepdim=True)  # [..., 1, m]
    cst = torch.matmul(cs.pow(2), p) + torch.matmul(q, ct.pow(2).transpose(-1, -2))
    return cst - 2.0 * torch.matmul(torch.matmul(cs, gamma), ct.transpose(-1, -2))


def _uniform_plan(cs: Tensor, ct: Tensor) -> Tensor:
    """The product coupling ``1/(n m)`` of every problem; batch dims broadcast ``cs`` with ``ct``."""
    n, m = cs.shape[-1], ct.shape[-1]
    batch = torch.broadcast_shapes(cs.shape[:-2], ct.shape[:-2])
    return torch.full((*batch, n, m), 1.0 / (n * m), dtype=ct.dtype, device=ct.device)


def gromov_wasserstein(
    cs: Tensor,
    ct: Tensor,
    beta: float = 0.1,
    n_outer: int = 5,
    n_inner: int = 20,
    plan: Tensor | None = None,
):
    r"""Gromov–Wasserstein discrepancy (GOT / GSC), batched.

    Alternates ``n_outer`` times: linearise :math:`L = C_{st} - 2 C_s \gamma C_t^\top`
    at the current ``gamma`` (detached, as in GSC) and solve it with ``n_inner`` IPOT
    steps of ``beta``. The distance is :math:`\langle L(\gamma), P\rangle` where ``P``
    is ``plan`` when given (GSC evaluates with the Wasserstein plan) else ``gamma`` (GOT).

    Args:
        cs: intra-source costs ``[..., n, n]``.
        ct: intra-target costs ``[..., m, m]`` (batch dims broadcast with ``cs``).
        beta: proximal step (default ``0.1``).
        n_outer: linearisation steps (default ``5``).
        n_inner: IPOT steps per linearisation (default ``20``).
        plan: optional plan ``[B, n, m]`` to evaluate the distance with.

    Returns:
        ``(d [B], gamma [B, n, m])``.
    """
    gamma = gw_plan(cs, ct, beta, n_outer, n_inner)
    lin = gw_tensor(cs, ct, gamma)
    return batch_trace_dot(lin, gamma if plan is None else plan), gamma


def gw_plan(cs: Tensor, ct: Tensor, beta: float = 0.1, n_outer: int = 5, n_inner: int = 20) -> Tensor:
    r"""The Gromov–Wasserstein plan ``gamma`` alone (no gradient): ``n_outer`` times,
    linearise at the current plan, from the product coupling, and take ``n_inner`` IPOT
    steps of ``beta`` on the linearisation. See :func:`gromov_wasserstein`."""
    gamma = _uniform_plan(cs, ct)
    cs, ct = cs.detach(), ct.detach()
    for _ in range(n_outer):
        gamma = ipot(gw_tensor(cs, ct, gamma), beta=beta, n_iter=n_inner)
    return gamma.detach()


def ot_plans(
    c: Tensor,
    cs: Tensor | None,
    ct: Tensor | None,
    wd_beta: float = 0.5,
    wd_iters: int = 40,
    gw_beta: float = 0.1,
    gw_outer: int = 5,
    gw_inner: int = 20,
    fused: bool = False,
) -> tuple[Tensor, Tensor]:
    """The Wasserstein plan of ``c`` and the GW plan of ``(cs, ct)`` (skipped when ``cs`` is
    None: returns an empty tensor), computed without autograd. Shapes are static, so on
    CUDA this function is captured once per shape by :class:`CudaGraphed`. ``fused``: by
    the Triton kernels of :mod:`models.ot.fused` where they take the inputs."""
    w_solver, gw_solver = ipot, gw_plan
    if fused:
        from . import fused as F

        if F.supported(c, cs, ct):
            w_solver, gw_solver = F.ipot, F.gw_plan
    with torch.no_grad():
        t = w_solver(c, beta=wd_beta, n_iter=wd_iters)
        if cs is None:
            return t, torch.empty(0, device=c.device, dtype=c.dtype)
        return t, gw_solver(cs, ct, gw_beta, gw_outer, gw_inner)


class CudaGraphed:
    """Replay a pure, no-grad tensor function from a CUDA graph, one graph per input shape.

    Tiny batched OT problems are bound by kernel-launch overhead (a few thousand small
    kernels per call); a graph replays them with one launch. Off CUDA, or if capture
    fails, it calls the function eagerly.
    """

    def __init__(self, fn, enabled: bool = True, max_graphs: int = 16):
        self.fn = fn
        self.enabled = enabled
        self.max_graphs = max_graphs
        self._graphs: dict = {}
        self.error: str | None = None  # why capture was given up, if it was

    def reset(self) -> None:
        """Forget every captured graph. Needed whenever a tensor the function reads (not an
        argument: e.g. a model's cluster index) is replaced, since a graph replays fixed addresses."""
        self._graphs.clear()

    def __call__(self, *args: Tensor | None):
        tensors = [a for a in args if a is not None]
        if not (self.enabled and tensors and tensors[0].is_cuda):
            return self.fn(*args)
        key = tuple(None if a is None else (tuple(a.shape), a.dtype) for a in args)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.fn(*args)
            try:
                entry = self._capture(args)
            except Exception as exc:  # capture is an optimisation; never fail a run over it
                self.enabled = False
                self.error = repr(exc)
                warnings.warn(f"CUDA graph capture of the OT solver failed, running eagerly: {exc!r}")
                return self.fn(*args)
            self._graphs[key] = entry
        graph, static_in, static_out = entry
        for dst, src in zip(static_in, args):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return tuple(o.clone() for o in static_out)

    def _capture(self, args):
        static_in = [None if a is None else a.detach().clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(*static_in)
        return graph, static_in, static_out

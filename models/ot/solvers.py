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


def _log_cost_cap(dtype: torch.dtype) -> float:
    """The largest log-cost ``shift="auto"`` lets through: a quarter of ``log(dtype max)``
    (22.2 in float32), because the GW linearisation squares costs and sums them and its
    backward multiplies by them again; ``e^{2 L}`` (1.9e19 in float32) leaves that room."""
    return math.log(torch.finfo(dtype).max) / 4.0


def _scope_reduce(x: Tensor, scope, how: str) -> Tensor:
    r"""Reduce per-problem values ``x`` ``[...]`` (``amin`` or ``amax``) over the problems
    that share a scope, and give every problem its scope's value (same shape as ``x``).

    ``scope``: ``None``/``"problem"``: each problem alone (``x`` itself); ``"batch"``: every
    problem together; an integer tensor broadcastable to ``x`` with ids in
    ``0 .. x.numel() - 1``: problems with equal ids together. Static shapes and no host
    read (CUDA graphs, ``torch.compile``); differentiable like ``amin``/``amax``.
    """
    if scope is None or (isinstance(scope, str) and scope == "problem"):
        return x
    if isinstance(scope, str):
        if scope != "batch":
            raise ValueError(f"unknown scope {scope!r} (expected 'problem', 'batch' or a tensor of ids)")
        red = x.amin() if how == "amin" else x.amax()
        return red.expand_as(x)
    ids = scope.expand(x.shape).reshape(-1)
    fill = math.inf if how == "amin" else -math.inf
    acc = torch.full((ids.numel(),), fill, dtype=x.dtype, device=x.device)
    acc = acc.scatter_reduce(0, ids, x.reshape(-1), how, include_self=True)
    return acc[ids].view(x.shape)


def cost_matrix(x: Tensor, y: Tensor, form: str = "exp", tau: float = 0.5, shift: str = "auto", scope=None) -> Tensor:
    r"""Transport cost between the rows of ``x`` and ``y``.

    * ``form="exp"`` (GSC): :math:`C_{ij} = \exp(-\cos(x_i, y_j)/\tau - s)`; ``s`` is 0 at
      GSC's settings, see :func:`cost_from_cosine` for ``shift``.
    * ``form="cos"`` (GOT): :math:`C_{ij} = 1 - \cos(x_i, y_j)`, in ``[0, 2]``.

    Args:
        x: ``[B, n, d]``.
        y: ``[B, m, d]``.
        form: ``"exp"`` or ``"cos"`` (default ``"exp"``).
        tau: temperature of the ``exp`` form (default ``0.5``).
        shift: ``"auto"``, ``"always"`` or ``"never"`` (:func:`cost_from_cosine`).
        scope: the problems one shift is taken over (:func:`prune_cost`).
    """
    return cost_from_cosine(cosine(x, y), form, tau, shift, scope)


def cost_from_cosine(cos: Tensor, form: str = "exp", tau: float = 0.5, shift: str = "auto", scope=None,
                     bounded: bool = True) -> Tensor:
    r""":func:`cost_matrix` from precomputed cosines ``[..., n, m]`` in ``[-1, 1]`` (so that
    several cost matrices of one batch are made by one stacked call), or from raw inner
    products with ``bounded=False`` (the notebook's ``no_norm``: the rows were not
    normalised, so nothing bounds them).

    ``exp`` costs are :math:`e^{-\cos/\tau - s}` with a detached shift ``s``:

    * ``"never"``: ``s = 0``, GSC's ``cost_matrix_batch`` (in ``[e^{-1/tau}, e^{1/tau}]``);
      float32 overflows once ``1/tau`` nears 88 and the GW square of the cost near 44.
    * ``"always"``: ``s`` = the largest :math:`-\cos/\tau` of the ``scope`` (the notebook's
      ``exp(-cos/tau - (-cos/tau).max())`` with ``scope="batch"``), so the largest cost is 1.
    * ``"auto"`` (default): ``s = max(0, max(-cos/tau) - L)`` with ``L = log(dtype max) / 4``
      (22.2 in float32): 0, i.e. GSC's numbers, whenever ``1/tau <= L`` (``tau >= 0.045`` in
      float32; a cosine never exceeds 1, so this is decided without looking at the data);
      below that, just enough shift that no cost exceeds ``e^L``, so neither the cost nor
      its square in the GW linearisation can reach inf. With ``bounded=False`` the largest
      logit is looked at every time (inner products have no bound), the same formula.

    Within one scope a shift multiplies every cost by the same ``e^{-s}``, and pruning over
    the same scope commutes with that, so a shifted pruned cost is ``e^{-s}`` times the
    unshifted one: the W distances scale by it (the plans do not: IPOT's kernel
    ``exp(-C/beta)`` sees the scaled cost). The shift is per ``scope``
    (see :func:`prune_cost`).
    """
    if form == "exp":
        logits = cos / -tau
        if shift == "never" or (shift == "auto" and bounded and 1.0 / tau <= _log_cost_cap(cos.dtype)):
            return torch.exp(logits)
        if shift not in ("auto", "always"):
            raise ValueError(f"unknown cost shift {shift!r} (expected 'auto', 'always' or 'never')")
        top = _scope_reduce(logits.detach().amax(dim=(-2, -1)), scope, "amax")[..., None, None]
        s = top if shift == "always" else torch.relu(top - _log_cost_cap(cos.dtype))
        return torch.exp(logits - s)
    if form == "cos":
        return 1.0 - cos
    raise ValueError(f"unknown cost form {form!r} (expected 'exp' or 'cos')")


def prune_cost(c: Tensor, beta: float = 0.1, scope=None) -> Tensor:
    r"""GSC's pruning ``relu(C - (min + beta (max - min)))``.

    ``scope`` says which problems one threshold is taken over: ``None``/``"problem"``
    (each ``[n, m]`` problem its own min and max), ``"batch"`` (GSC: ``cos_distance.min()``
    over the whole stacked batch, in ``wd``, ``GW_distance`` and ``cos_batch``), or an integer
    tensor of ids broadcastable to ``c.shape[:-2]``: problems with equal ids share one
    threshold (LightGCNOT: one per kind of cost and per group of subgraphs, i.e. per
    GSC ``sub_loss_batch`` call). ``beta = 0`` subtracts only the minimum (keeps every
    entry's ordering); ``beta < 0`` or None returns ``c`` unchanged.
    """
    if beta is None or beta < 0:
        return c
    lo = _scope_reduce(c.amin(dim=(-2, -1)), scope, "amin")[..., None, None]
    hi = _scope_reduce(c.amax(dim=(-2, -1)), scope, "amax")[..., None, None]
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
    round: bool = False,
) -> Tensor:
    r"""IPOT (Xie et al. 2019, https://arxiv.org/abs/1802.04307), batched and log-domain.

    Proximal point iterations with uniform marginals :math:`a = 1/n`, :math:`b = 1/m`:

    .. math::
        Q = e^{-C/\beta} \odot T^{(t)},\quad
        \delta = \frac{a}{Q\sigma},\ \sigma = \frac{b}{Q^\top \delta}\ (\text{n\_inner times}),\quad
        T^{(t+1)} = \operatorname{diag}(\delta)\, Q\, \operatorname{diag}(\sigma).

    With ``n_iter = 1`` and many inner steps this is Sinkhorn with ``reg = beta``; with
    many outer steps it converges to the unregularised OT plan. It is GSC's ``OT_batch``
    (``sigma`` carried over the outer iterations, one inner step) computed on logs, so no
    ``exp(-C/beta)`` underflows to 0. The last update fixes the column marginals exactly;
    the rows are off by what the iterations have not converged. ``round=True`` then
    rounds the plan onto both marginals (:func:`round_to_marginals`), so that it is
    feasible; GSC does not, and the default does not either.

    Args:
        c: cost ``[..., n, m]``.
        beta: proximal step (default ``0.5``, GSC).
        n_iter: outer iterations (default ``40``).
        n_inner: Sinkhorn steps per outer iteration (default ``1``).
        log_t0: optional log of the starting plan (default: all ones, as in GOT/GSC).
        round: round onto exact marginals at the end (default ``False``, GSC).

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
    t = log_t.exp()
    return round_to_marginals(t) if round else t


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


def wasserstein(c: Tensor, beta: float = 0.5, n_iter: int = 40, detach_plan: bool = False, round: bool = False):
    r"""Wasserstein distance :math:`d_W = \sum_{ij} C_{ij} T_{ij}` with the IPOT plan
    (GSC's ``OT_distance_batch``, which calls ``OT_batch`` with 40 iterations).

    Returns ``(d [B], T [B, n, m])``. ``detach_plan=True`` stops gradients through the
    iterations (the envelope theorem makes ``T`` the gradient of the optimum anyway; GSC
    differentiates through them). ``round``: see :func:`ipot`.
    """
    t = ipot(c.detach() if detach_plan else c, beta=beta, n_iter=n_iter, round=round)
    return batch_trace_dot(c, t), t


def gw_tensor(cs: Tensor, ct: Tensor, gamma: Tensor) -> Tensor:
    r"""The GW linearisation :math:`C_{st} - 2 C_s \gamma C_t^\top` for the square loss.

    :math:`C_{st} = (C_s^{\odot 2} p) 1_m^\top + 1_n (q^\top (C_t^{\odot 2})^\top)` with
    the uniform marginals ``p = 1/n``, ``q = 1/m``, as GSC's ``GW_batch`` (an unrounded
    plan's rows are not exactly ``1/n``; the linearisation is taken at the target
    marginals, not at the plan's). Equals
    ``ot.gromov.tensor_product(*ot.gromov.init_matrix(Cs, Ct, p, q), gamma)`` and
    :math:`\langle \cdot, \gamma \rangle` equals ``ot.gromov.gwloss``.
    """
    cst = cs.pow(2).mean(dim=-1, keepdim=True) + ct.pow(2).mean(dim=-1).unsqueeze(-2)
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
    round: bool = False,
    detach_plan: bool = False,
):
    r"""Gromov–Wasserstein discrepancy (GOT / GSC), batched.

    Alternates ``n_outer`` times: linearise :math:`L = C_{st} - 2 C_s \gamma C_t^\top`
    at the current ``gamma`` and solve it with ``n_inner`` IPOT steps of ``beta``. The
    distance is :math:`\langle L(\gamma), P\rangle` where ``P`` is ``plan`` when given
    (GSC evaluates with the Wasserstein plan) else ``gamma`` (GOT). As in GSC's
    ``GW_batch``, gradients flow through every iteration into ``L(gamma)``, and the
    returned ``gamma`` is detached; ``detach_plan=True`` computes ``gamma`` without them.

    Args:
        cs: intra-source costs ``[..., n, n]``.
        ct: intra-target costs ``[..., m, m]`` (batch dims broadcast with ``cs``).
        beta: proximal step (default ``0.1``).
        n_outer: linearisation steps (default ``5``).
        n_inner: IPOT steps per linearisation (default ``20``).
        plan: optional plan ``[B, n, m]`` to evaluate the distance with.
        round: round every inner plan onto exact marginals (:func:`ipot`; GSC does not).
        detach_plan: no gradient through the iterations (default ``False``, GSC).

    Returns:
        ``(d [B], gamma [B, n, m])``.
    """
    gamma = gw_plan(cs, ct, beta, n_outer, n_inner, round=round, detach=detach_plan)
    lin = gw_tensor(cs, ct, gamma)
    return batch_trace_dot(lin, gamma if plan is None else plan), gamma.detach()


def gw_plan(
    cs: Tensor,
    ct: Tensor,
    beta: float = 0.1,
    n_outer: int = 5,
    n_inner: int = 20,
    round: bool = False,
    detach: bool = True,
) -> Tensor:
    r"""The Gromov–Wasserstein plan ``gamma`` alone: ``n_outer`` times, linearise at the
    current plan, from the product coupling, and take ``n_inner`` IPOT steps of ``beta`` on
    the linearisation (GSC's ``GW_batch`` with ``gwd``'s ``lamda=0.1, iteration=5,
    OT_iteration=20``). ``detach`` (default): no gradient; ``False``: differentiable
    through every iteration, as GSC's ``Cgamma``. See :func:`gromov_wasserstein`."""
    gamma = _uniform_plan(cs, ct)
    if detach:
        cs, ct = cs.detach(), ct.detach()
    for _ in range(n_outer):
        gamma = ipot(gw_tensor(cs, ct, gamma), beta=beta, n_iter=n_inner, round=round)
    return gamma.detach() if detach else gamma


def ot_plans(
    c: Tensor,
    cs: Tensor | None,
    ct: Tensor | None,
    wd_beta: float = 0.5,
    wd_iters: int = 40,
    gw_beta: float = 0.1,
    gw_outer: int = 5,
    gw_inner: int = 20,
    triton: bool = False,
    round_plan: bool = False,
) -> tuple[Tensor, Tensor]:
    """The Wasserstein plan of ``c`` and the GW plan of ``(cs, ct)`` (skipped when ``cs`` is
    None: returns an empty tensor), computed without autograd. Shapes are static, so on
    CUDA this function is captured once per shape by :class:`CudaGraphed`. ``triton``: by
    the Triton kernels of :mod:`models.ot.triton_plans` where they take the inputs.
    ``round_plan``: round every plan onto exact marginals (:func:`ipot`)."""
    w_solver, gw_solver = ipot, gw_plan
    if triton:
        from . import triton_plans

        if triton_plans.supported(c, cs, ct):
            w_solver, gw_solver = triton_plans.ipot, triton_plans.gw_plan
    with torch.no_grad():
        t = w_solver(c, beta=wd_beta, n_iter=wd_iters, round=round_plan)
        if cs is None:
            return t, torch.empty(0, device=c.device, dtype=c.dtype)
        return t, gw_solver(cs, ct, gw_beta, gw_outer, gw_inner, round=round_plan)


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

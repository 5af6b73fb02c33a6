r"""LightGCNOT: LightGCN + BPR + reg + optimal-transport subgraph contrast [+ NCL prototypes].

The researcher's model, built from GSC (Han et al., ECCV 2022,
https://arxiv.org/abs/2207.11996) and GOT (Chen et al., ICML 2020,
https://arxiv.org/abs/2006.14744), with NCL's prototype term as an option (Lin et al.,
WWW 2022, https://arxiv.org/abs/2202.06200). Per training batch:

1. Propagate LightGCN once: layers :math:`E^{(0)}..E^{(L)}` (shared with BPR).
2. Draw centres (``n_user_centres`` users, ``n_item_centres`` items, ``n_node_centres``
   over both) and, on the device, a subgraph of ``k = 1 + k1 + k2`` nodes around each
   (see :mod:`models.ot.sampling`).
3. Two views of each subgraph's nodes: anchor :math:`z_1` (``ot_z1``) and generated
   :math:`z_2` (``ot_z2``); only the sampled rows are computed. A view is a layer, the
   mean of a set of layers :math:`S`, the GAT over one, or the same of a SimGCL-perturbed
   forward:

   .. math::
       z = \frac{1}{|S|} \sum_{l \in S} E^{(l)},\qquad
       z = \sigma\big(\mathrm{GAT}(E_S)\big),\qquad
       \tilde E^{(l)} = \hat A \tilde E^{(l-1)} + \epsilon\, \mathrm{sign}(\cdot) \odot \tfrac{U}{\lVert U \rVert}.

4. Positive pairs :math:`(z_1^b, z_2^b)`; negatives pair :math:`z_1^b` with another
   subgraph's :math:`z_1` and/or :math:`z_2` (a random cyclic derangement within each
   group: users and items, or all together with ``ot_groups: joint``). For every pair,
   batched ``[P, k, k]``, with :math:`s(x, y) = \cos(x, y)` or, ``ot_normalize: false``,
   the raw :math:`\langle x, y \rangle`:

   .. math::
       C_{ij} = \mathrm{prune}\big(e^{-s(x_i, y_j)/\tau - c}\big)\ \text{or}\ 1 - \cos,\quad
       d_W = \langle C, T_W \rangle,\quad
       d_{GW} = \langle C_{st} - 2 C_s \gamma C_t^\top, P \rangle,\ P \in \{T_W, \gamma\},

   :math:`c` the shift (``ot_cost_shift``), :math:`C_s` from the subgraph's adjacency,
   its :math:`A^2` (a 0/1 set or path counts :math:`(A^2)_{ij} = |N(i) \cap N(j)|`), or
   the cost of :math:`z_1` with itself.

5. :math:`\ell_{OT}` = GSC's BCE on :math:`e^{-d/t}` or InfoNCE on :math:`-d/t`, mixed
   :math:`a\,\ell_W + (1-a)\,\ell_{GW}`, a mean over each group, summed over groups.
6. The training loss: :math:`w_{BPR}\,\ell_{BPR} + \lambda_{reg}\,\ell_{reg} + w_{OT}\,\ell_{OT}`
   [:math:`+ w_{proto}\,\ell_{proto}`].

With the defaults this is GSC's arithmetic (``model.py`` of github.com/yh-han/GSC,
``sub_loss_batch``), value and gradient, once for the user subgraphs and once for the item
subgraphs: ``tests/models/test_reference_gsc.py`` checks it against numbers recorded from
GSC's own code (``tests/models/fixtures/gsc``). Where ours differs it is only where GSC's
would be inf or NaN: IPOT runs on logs (GSC's ``exp(-C/beta)`` underflows to 0 and divides
by it at small ``tau``), the cosine's normalisation has a bounded gradient at zero vectors,
and ``ot_cost_shift=auto`` shifts costs only when float32 could overflow.

Cost per batch: on a GPU this term is bound by kernel launches, not arithmetic, so it is
written to launch few. Step 2, the negatives' pairing and the masks form one static-shape,
no-grad function (:meth:`LightGCNOT._draw`) and, with ``ot_detach_plan``, the W/GW plans
another (by default the plans carry GSC's gradient, so they run eagerly with autograd); on
CUDA each is replayed from a CUDA graph (one launch for a few hundred kernels; the default
CUDA RNG is graph-safe). Every pair's cost comes from one stacked call and every loss (W and GW, user
and item subgraphs) from one call. ``python bench/ot_ops.py`` counts the kernels.

Loss terms: ``("bpr", "reg", "ot")``, plus ``"proto"`` when ``proto_weight > 0``; each
is already weighted, so their sum is the training loss.

Args (config keys; defaults in ``config/LightGCNOT.yaml`` are GSC's choices and the
notebook's default row):
    embedding_size (int): 64.
    n_layers (int): 3.
    reg_weight (float): 1e-4 (L2 on layer-0 embeddings and on the GAT weights).
    require_pow (bool): False.
    param_init (str): ``"xavier"`` (RecBole's init: embeddings and the GAT's weight
        Xavier-uniform) or ``"none"`` (no init step: embeddings :math:`\mathcal N(0, 1)` as
        ``nn.Embedding`` draws them, the GAT as PyG's ``GATConv`` makes it; the notebook's
        "wo_init_pam"). See :class:`models.lightgcn_base.LightGCNBase`.
    bpr_weight (float): 1. The weight :math:`w_{BPR}` of BPR; 0 trains without it
        ("wobpr"; the term is then 0, not computed into the gradient).
    ot_weight (float): 1e-7. 0 skips the OT term entirely.
    ot_z1 (str|int|list): ``"mean"`` (layers 0..L), ``"mean1"`` (1..L), ``"gat"`` (the GAT
        over ``ot_z1_gat_input``), a layer index (negative counts from L: -2 is layer L-1)
        or a list of layers, averaged (``[0, 1]``: the notebook's "z1:01").
    ot_z2 (str|int|list): ``"gat"`` (PyG ``GATConv`` over ``ot_gat_input``, no self loops;
        GSC's generator), ``"next"`` (layer L+1), ``"last"`` (layer L), ``"simgcl"`` (the
        ``ot_simgcl_input`` readout of a SimGCL-perturbed forward), a layer index or a list
        of layers.
    ot_gat_input (str|int|list): ``"z1"``, ``"next"`` (layer L+1, one more product: the
        notebook's "gat4") or a view as in ``ot_z1`` (default ``"z1"``).
    ot_z1_gat_input (str|int|list): what the GAT runs over for ``ot_z1: gat`` (default
        ``"mean"``); the views share the one GAT ("z1:gat1_z2:gat3").
    ot_gat_activation (str): ``"relu"`` (GSC), ``"prelu"``, ``"elu"`` or ``"none"``.
    ot_simgcl_eps (float): 0.1, noise magnitude of the ``simgcl`` view.
    ot_simgcl_input (str|int|list): the perturbed layers the ``simgcl`` view averages:
        ``"z1"`` (default: those of ``ot_z1``), ``"mean"``, ``"mean1"`` (layer 0 left out
        while z1 keeps it: "z1_sm03_z2_simgcl(没加inital emb)"), a layer or a list.
    n_user_centres (int): 5. n_item_centres (int): 5.
    n_node_centres (int): 0, centres uniform over users and items together (GSC's
        ``nodes_batch``: the notebook's "300batch").
    ot_groups (str): ``"ui"`` (users' and items' subgraphs are two groups: negatives,
        pruning thresholds and the loss's mean within each, the two losses summed; the
        notebook's "ui") or ``"joint"`` (one group, one loss: GSC's one ``sub_loss_batch``).
    centre_source (str): ``"all"`` (uniform over all users/items) or ``"batch"``.
    k1 (int): 3, 1-hop nodes per subgraph. k2 (int): 2, nodes from ``sample_adj``.
    sample_adj (str): ``"A"`` (2-hop walks), ``"A2"`` (uniform over the 2-hop set,
        materialised when ``A^2`` has at most ``a2_max_paths`` paths) or ``"cluster"``
        (k-means cluster of the centre, recomputed every epoch).
    subg1_adj (str): structure cost :math:`C_s` of GW: ``"A"``, ``"A2"`` (adjacency,
        GSC) or ``"xx"`` (cost of :math:`z_1` with itself, GOT).
    a2_max_paths (float): 2e7.
    a2_weights (str): ``"set"`` (``A^2`` of ``subg1_adj: A2`` as 0/1) or ``"counts"``
        (the number of 2-paths, "noguiyi"; ``exp(-count/tau)`` then). Sampling from ``A^2``
        is uniform over its set either way.
    ot_distance (str): ``"both"``, ``"wd"`` or ``"gwd"``. ot_mix (float): 0.5, the
        weight ``a`` of the W loss when both.
    gw_plan (str): ``"wd"`` (GSC: evaluate GW with the W plan) or ``"gw"`` (GOT).
    ot_loss (str): ``"bce"`` (GSC) or ``"infonce"``.
    ot_negatives (str): ``"both"`` (GSC), ``"z1"`` or ``"z2"``.
    ot_cost (str): ``"exp"`` (GSC) or ``"cos"`` (GOT). ot_tau (float): 0.5 (the notebook's;
        GSC's ``Model`` default, its Cora config has 5).
    ot_normalize (bool): True (GSC, GOT; "normxy"): costs of the cosines. False (the
        notebook's "no_norm"): of the raw inner products, unbounded, so ``ot_cost_shift:
        auto`` then looks at the largest logit every time; ``exp`` only.
    ot_prune (float): 0.1 (GSC's threshold; negative disables).
    ot_prune_scope (str): ``"batch"`` (GSC: one threshold from the min and max over all
        pairs of a group, per kind of cost: ``C``, ``C_t``, ``C_s``; subgraphs out of the
        loss excluded) or ``"problem"`` (each ``[k, k]`` problem its own min and max: a
        subgraph's costs then do not depend on the rest of the batch).
    ot_cost_shift (str): ``"auto"`` (GSC's cost, shifted only where float32 could
        overflow, i.e. ``tau < 0.045``; see :func:`models.ot.solvers.cost_from_cosine`),
        ``"always"`` (the largest cost of each scope is 1: the notebook's
        ``exp(-cos/tau - max)``, whatever ``tau``) or ``"never"`` (GSC, unguarded).
    ot_t_wd (float): 0.01. ot_t_gwd (float): 0.1.
    wd_beta (float): 0.5. wd_iters (int): 40 (what GSC's ``wd`` passes; ``OT_batch``'s own
        default of 50 is unused there).
    gw_beta (float): 0.1. gw_outer (int): 5. gw_inner (int): 20.
    ot_round_plan (bool): False (GSC). True rounds every IPOT plan onto exact uniform
        marginals (Altschuler et al. 2017), so that each plan is feasible and the GW
        linearisation a sum of squares (``d_GW >= 0``); GSC's plans' rows are off by what
        40 (W) or 20 (GW) iterations leave unconverged, ~1e-4 relative.
    ot_detach_plan (bool): False (GSC): gradients flow through every IPOT iteration of the
        W plan and of the GW plan, as in GSC. True: plans are computed without autograd
        (and, on CUDA, by the Triton kernels, replayed from a CUDA graph), gradients flow
        through the costs only: much cheaper on a GPU, the same loss value, but not GSC's
        gradient (on the fixtures it is off by 0.7-1.0 of the largest entry).
    ot_solver (str): ``"auto"``: the detached plans by the Triton kernels of
        :mod:`models.ot.triton_plans` (one kernel for W, one for GW, instead of ~2,700 small
        ones) on CUDA where Triton is installed, checked against PyTorch on the first
        batch, else PyTorch; ``"torch"``; ``"triton"`` (an error where it cannot be used).
    ot_compile (bool): False. True runs the costs and the loss through ``torch.compile``
        (compiled kernels; the first batch pays the compilation, ~30 s). Experimental: equal
        to eager on the CPU (tested); on an H200 an epoch took 1.64x LightGCN's against
        1.68x without it.
    proto_weight (float): 0 (off). num_clusters (int): 1000. proto_temp (float): 0.1.
    proto_warmup (int): 20 epochs without the prototype term (NCL's ``warm_up_step``).
    warmup_all (bool): False; True also holds the OT term at 0 during the warm-up.
    kmeans_iters (int): 20.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from .lightgcn_base import LightGCNBase, gather_rows, propagate_symmetric
from .ot import losses as L
from .ot import sampling as S
from .ot import solvers as O
from .simgcl import simgcl_noise

__all__ = ["LightGCNOT", "kmeans", "pair_costs", "pair_loss", "scope_ids", "structure_cost", "subgraph_scope"]

def _settings_from_yaml():
    """``(defaults, choices, rules)`` of the OT settings, read from ``config/LightGCNOT.yaml``:
    the one place where each setting's default and allowed values are written (the planner
    checks specs against the same file through :mod:`models.rules`), so the model cannot
    drift from what a spec is validated against."""
    import yaml

    from . import default_config_file, rules

    path = default_config_file("LightGCNOT")
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f)
    defaults = {k: v for k, v in values.items() if k not in _BACKBONE}
    found = rules.read(path)
    choices = {k: set(r.choices) for k, r in found.rules.items() if k in defaults and r.choices and r.types == ("str",)}
    return defaults, choices, found


_BACKBONE = frozenset({"embedding_size", "n_layers", "reg_weight", "require_pow"})
_DEFAULTS, _CHOICES, _RULES = _settings_from_yaml()
_Z2 = set(_RULES.rules["ot_z2"].choices)


def _on_gpu(t) -> bool:
    """Where ``ot_solver=auto`` tries the Triton kernels (tests stand in a GPU here)."""
    return t.is_cuda


def _triton_plan_problem(c, cs, ct, plan_args) -> str | None:
    """None when the Triton plans are as close to float64 plans as PyTorch's float32 plans
    are (within 10x, or 1e-5), else what is wrong. The GW plan is sensitive: PyTorch's own
    float32 plan is ~1e-4 off float64 on real costs, so the kernels are judged against
    that, not against PyTorch's float32 plan."""
    wide = [None if x is None else x.double() for x in (c, cs, ct)]
    ref = O.ot_plans(*wide, **plan_args, triton=False)
    eager = O.ot_plans(c, cs, ct, **plan_args, triton=False)
    kernels = O.ot_plans(c, cs, ct, **plan_args, triton=True)
    for name, f, e, r in zip(("W", "GW"), kernels, eager, ref):
        if not r.numel():
            continue
        err_f, err_e = float((f.double() - r).abs().max()), float((e.double() - r).abs().max())
        if not err_f <= 10 * err_e + 1e-5:  # also catches NaN
            return f"{name} plans differ from float64 by {err_f:.3g} (PyTorch float32: {err_e:.3g})"
    return None


def _cfg(config, key):
    try:
        val = config[key]
    except KeyError:
        val = None
    return _DEFAULTS[key] if val is None else val


def _view_spec(val):
    """``"mean"``/``"mean1"``/other names stay strings; ``"-2"`` or ``-2`` become ints; a list
    of layers (``[0, 1]``, or ``"[0, 1]"`` as RecBole may hand it over) a tuple of ints."""
    if isinstance(val, str):
        text = val.strip()
        if text.startswith("["):
            import ast

            return _view_spec(ast.literal_eval(text))
        try:
            return int(text)
        except ValueError:
            return text
    if isinstance(val, (list, tuple)):
        if not val:
            raise ValueError("an empty list of layers")
        return tuple(int(v) for v in val)
    return int(val)


def kmeans(x: torch.Tensor, k: int, n_iter: int = 20, generator=None, chunk: int = 65536):
    """Lloyd's k-means on the device. Returns ``(centroids [k, d], assignment [n])``.

    ``k`` is clipped to ``n``; empty clusters keep their previous centroid. Distances are
    computed in chunks of ``chunk`` rows, so memory stays ``O(chunk * k)``.
    """
    x = x.detach()
    n = x.shape[0]
    k = max(1, min(k, n))
    idx = torch.randperm(n, device=x.device, generator=generator)[:k]
    cent = x[idx].clone()
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(n_iter):
        c_sq = cent.pow(2).sum(1)
        for s in range(0, n, chunk):
            xs = x[s : s + chunk]
            assign[s : s + chunk] = (2 * xs @ cent.t() - c_sq).argmax(dim=1)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1).to(x.dtype)
        cent = torch.where(counts > 0, sums / counts.clamp_min(1), cent)
    return cent, assign


def scope_ids(scope, rows: int):
    """Scope ids for :func:`models.ot.solvers.prune_cost` of ``rows`` stacked ``[B]`` batches
    of problems: problems of one row block in the same group share an id, the index of the
    group's first problem. ``scope``: ``[B]`` group of each subgraph, ``0`` users, ``1``
    items, ``2`` out of the loss (GSC drops those before its batch is formed)."""
    b = scope.numel()
    first = torch.full((3,), b, dtype=scope.dtype, device=scope.device)
    first = first.scatter_reduce(0, scope, torch.arange(b, device=scope.device), "amin")[scope]
    return first.expand(rows, b)


def subgraph_scope(group, in_loss):
    """``[B]`` scope of each subgraph's costs: its group (users 0, items 1) when it enters the
    loss, else 2, so that dropped subgraphs (filled with their centre) move no threshold."""
    return torch.where(in_loss, group, torch.full_like(group, 2))


def pair_costs(z1, z2, sigma, negatives: str, need_gw: bool, xx: bool, form: str, tau: float, prune: float,
               shift: str = "auto", scope=None, normalize: bool = True):
    r"""Every cost matrix of a batch from one stacked call, ``[P (+ P (+ 1)), B, k, k]``.

    Rows ``0..P-1``: :math:`C` of :math:`z_1` against each pair's second view (the positive
    :math:`z_2`, then the negatives: the deranged subgraph's :math:`z_1` and/or
    :math:`z_2`, by ``negatives``); then, when ``need_gw``, :math:`C_t` of each second view
    with itself; then, when ``xx``, :math:`C_s` of :math:`z_1` with itself (GOT). Rows are
    normalised once, so every cosine is a plain matmul; ``normalize=False`` (the notebook's
    ``no_norm``) leaves them as they are, and every "cosine" is then the raw inner product
    :math:`\langle x_i, y_j \rangle`. A pure function of tensors and Python constants, so
    ``torch.compile`` can compile it (``ot_compile``).

    ``scope`` (``[B]``, :func:`subgraph_scope`): each kind of cost (``C``, ``C_t``, ``C_s``)
    is shifted and pruned over all its pairs of one group at once, as GSC's ``wd`` and
    ``cos_batch`` threshold the whole stacked batch of one ``sub_loss_batch`` call (the
    notebook makes one call for the users and one for the items); ``None``: every
    ``[k, k]`` problem alone (``ot_prune_scope=problem``).
    """
    z = torch.stack([z1, z2])
    if normalize:
        z = O.safe_normalize(z)
    x, y2 = z[0], z[1]
    parts = [y2]
    if negatives in ("both", "z1"):
        parts.append(x.index_select(0, sigma))
    if negatives in ("both", "z2"):
        parts.append(y2.index_select(0, sigma))
    y = torch.stack(parts)  # [P, B, k, d]
    cos = [torch.matmul(x, y.transpose(-1, -2))]
    if need_gw:
        cos.append(torch.matmul(y, y.transpose(-1, -2)))
        if xx:
            cos.append(torch.matmul(x, x.transpose(-1, -2)).unsqueeze(0))
    ids = None
    if scope is not None:  # one id per (kind, group): row block r starts at problem r0 * B
        ids, r0 = [], 0
        for c in cos:
            ids.append(scope_ids(scope, c.shape[0]) + r0 * scope.numel())
            r0 += c.shape[0]
        ids = torch.cat(ids)
    cos = torch.cat(cos)
    return O.prune_cost(O.cost_from_cosine(cos, form, tau, shift, ids, bounded=normalize), prune, ids)


def structure_cost(adj, form: str, tau: float, prune: float, scope=None):
    r"""GW structure cost :math:`C_s` ``[B, k, k]`` of subgraph adjacencies: GSC's
    ``relu(exp(-adj/tau) - threshold)`` (``GW_distance``), or ``1 - adj`` for the ``cos``
    form, pruned over ``scope`` (``[B]``, :func:`subgraph_scope`; ``None``: per problem).
    No shift: ``adj`` is 0 or 1, so the cost lies in ``[e^{-1/tau}, 1]``."""
    cost = torch.exp(adj / -tau) if form == "exp" else 1.0 - adj
    return O.prune_cost(cost, prune, None if scope is None else scope_ids(scope, 1)[0])


def pair_loss(c, ct, cs, t_wd, gamma, coef, distance: str, gw_plan: str, t_w: float, t_gw: float, form: str):
    r"""The OT contrast loss from the costs and the plans: :math:`d_W = \langle C, T_W\rangle`
    and/or :math:`d_{GW} = \langle C_{st} - 2 C_s \gamma C_t^\top, P\rangle`, each over its
    temperature, into :func:`models.ot.losses.ot_contrast_loss`. Pure, like :func:`pair_costs`.
    Gradients flow through the plans as far as they carry them: through every iteration
    when they were computed with autograd (GSC, ``ot_detach_plan=False``), else not."""
    d = []
    if distance in ("both", "wd"):
        d.append(O.batch_trace_dot(c, t_wd) / t_w)
    if distance in ("both", "gwd"):
        plan = t_wd if gw_plan == "wd" else gamma
        d.append(O.batch_trace_dot(O.gw_tensor(cs, ct, gamma), plan) / t_gw)
    return L.ot_contrast_loss(torch.stack(d), coef, form)


class LightGCNOT(LightGCNBase):
    """LightGCN + OT subgraph contrast; see the module docstring."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        g = {key: _cfg(config, key) for key in _DEFAULTS}
        problem = _RULES.problem({"n_layers": self.n_layers, "reg_weight": self.reg_weight, **g})
        if problem:  # what the planner refuses from the same file, for callers that skip it
            raise ValueError(problem)
        self.ot_weight = float(g["ot_weight"])
        self.bpr_weight = float(g["bpr_weight"])
        self.z1_spec = _view_spec(g["ot_z1"])
        self.z2_spec = _view_spec(g["ot_z2"])
        if isinstance(self.z2_spec, str) and self.z2_spec not in _Z2:
            raise ValueError(f"ot_z2={self.z2_spec!r}: expected one of {sorted(_Z2)} or a layer index")
        self.gat_input = _view_spec(g["ot_gat_input"])
        self.z1_gat_input = _view_spec(g["ot_z1_gat_input"])
        simgcl_input = _view_spec(g["ot_simgcl_input"])
        self.simgcl_spec = self.z1_spec if simgcl_input == "z1" else simgcl_input
        names = {"z1": {"mean", "mean1", "gat"}, "gat_input": {"mean", "mean1", "z1", "next"},
                 "z1_gat_input": {"mean", "mean1", "next"}, "simgcl_input": {"mean", "mean1", "z1"}}
        for what, spec in (("z1", self.z1_spec), ("gat_input", self.gat_input), ("z1_gat_input", self.z1_gat_input),
                           ("simgcl_input", simgcl_input)):
            if isinstance(spec, str) and spec not in names[what]:
                raise ValueError(f"ot_{what}={spec!r}: expected one of {sorted(names[what])}, a layer or a list of layers")
        self.simgcl_eps = float(g["ot_simgcl_eps"])
        self.normalize = bool(g["ot_normalize"])
        self.n_user_centres = int(g["n_user_centres"])
        self.n_item_centres = int(g["n_item_centres"])
        self.n_node_centres = int(g["n_node_centres"])
        self.ot_groups = g["ot_groups"]
        self.a2_weights = g["a2_weights"]
        self.centre_source = g["centre_source"]
        self.k1, self.k2 = int(g["k1"]), int(g["k2"])
        self.sample_adj, self.subg1_adj = g["sample_adj"], g["subg1_adj"]
        self.ot_distance, self.ot_mix = g["ot_distance"], float(g["ot_mix"])
        self.gw_plan, self.ot_loss_form, self.ot_negatives = g["gw_plan"], g["ot_loss"], g["ot_negatives"]
        self.ot_cost, self.ot_tau, self.ot_prune = g["ot_cost"], float(g["ot_tau"]), float(g["ot_prune"])
        self.prune_scope, self.cost_shift = g["ot_prune_scope"], g["ot_cost_shift"]
        self.round_plan = bool(g["ot_round_plan"])
        self.t_wd, self.t_gwd = float(g["ot_t_wd"]), float(g["ot_t_gwd"])
        self.wd_beta, self.wd_iters = float(g["wd_beta"]), int(g["wd_iters"])
        self.gw_beta, self.gw_outer, self.gw_inner = float(g["gw_beta"]), int(g["gw_outer"]), int(g["gw_inner"])
        self.detach_plan = bool(g["ot_detach_plan"])
        self.ot_solver = g["ot_solver"]
        self.proto_weight = float(g["proto_weight"])
        self.num_clusters = int(g["num_clusters"])
        self.proto_temp = float(g["proto_temp"])
        self.proto_warmup = int(g["proto_warmup"])
        self.warmup_all = bool(g["warmup_all"])
        self.kmeans_iters = int(g["kmeans_iters"])
        if self.k1 < 0 or self.k2 < 0 or self.k1 + self.k2 < 1:
            raise ValueError("k1, k2 >= 0 and k1 + k2 >= 1")

        self.loss_names = ("bpr", "reg", "ot", "proto") if self.proto_weight > 0 else ("bpr", "reg", "ot")

        # Structures for sampling and for the GW structure cost; all index tensors.
        self.edge_keys = self.graph.edge_keys()
        self.a2 = None
        if "A2" in (self.sample_adj, self.subg1_adj) and S.two_hop_paths(self.graph) <= float(g["a2_max_paths"]):
            self.a2 = S.two_hop_csr(self.graph)
            self.a2_keys = self.a2.edge_keys()
        self.gat = None
        if "gat" in (self.z1_spec, self.z2_spec):
            from torch_geometric.nn import GATConv  # lazy: importing PyG costs seconds

            self.gat = GATConv(self.latent_dim, self.latent_dim, heads=1, add_self_loops=False)
            self.gat_act = {
                "relu": torch.nn.ReLU(), "prelu": torch.nn.PReLU(), "elu": torch.nn.ELU(), "none": torch.nn.Identity()
            }[g["ot_gat_activation"]]
        self._need_gw = self.ot_distance in ("both", "gwd")
        self._n_pairs = 1 + {"both": 2, "z1": 1, "z2": 1}[self.ot_negatives]
        mixes = {"both": (self.ot_mix, 1.0 - self.ot_mix), "wd": (1.0,), "gwd": (1.0,)}
        self._mix = mixes[self.ot_distance]  # weight of each distance's loss, W first
        # The draw replays from a CUDA graph unless it needs A^2 pairs found by a sort-join
        # (a data-dependent size). Centres drawn from the batch vary in number: one graph per
        # count (CudaGraphed keys graphs by input shape).
        graphable = not (self.subg1_adj == "A2" and (self.a2 is None or self.a2_weights == "counts") and self._need_gw)
        self._draw_fn = O.CudaGraphed(self._draw, enabled=graphable)
        # ot_compile: the differentiable rest of the term through torch.compile (compiled
        # kernels, forward and backward); functions of tensors and constants, so one
        # compilation serves every run of a warm worker with the same settings.
        compile_ = (lambda f: torch.compile(f, fullgraph=True, dynamic=False)) if g["ot_compile"] else (lambda f: f)
        self._pair_costs, self._pair_loss = compile_(pair_costs), compile_(pair_loss)
        # The plans (no autograd): Triton kernels where they apply ("auto": on CUDA with
        # Triton present, checked against PyTorch on the first batch), else PyTorch; on
        # CUDA either is replayed from a graph.
        self._plan_args = dict(wd_beta=self.wd_beta, wd_iters=self.wd_iters, gw_beta=self.gw_beta,
                               gw_outer=self.gw_outer, gw_inner=self.gw_inner, round_plan=self.round_plan)
        self._triton_unchecked = self.ot_solver != "torch"
        self._plans = self._plan_solver(triton=self._triton_unchecked)
        self._epoch = -1
        self._clusters_epoch = None
        self.node_cluster = None
        self.cluster_csr = None
        self.centroids = None
        self.reset_parameters()

    # -- parameters and epochs ---------------------------------------------------
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "gat", None) is not None and self.param_init == "xavier":
            self.gat.reset_parameters()  # glorot (Xavier-uniform) weights, zero bias
            torch.nn.init.xavier_uniform_(self.gat.lin.weight)

    def train(self, mode: bool = True):
        """RecBole's trainer calls ``model.train()`` at the start of every epoch: that is
        the epoch clock for the warm-up and the per-epoch k-means (NCL's E-step)."""
        if mode:
            self._epoch += 1
        return super().train(mode)

    def _warm(self) -> bool:
        return self._epoch >= self.proto_warmup

    def _gat_params(self):
        return tuple(self.gat.parameters()) if self.gat is not None else ()

    # -- k-means (NCL E-step) ------------------------------------------------------
    def e_step(self) -> None:
        """Cluster users and items separately on their layer-0 embeddings (as NCL)."""
        gen = None
        ku, cu = kmeans(self.user_embedding.weight, self.num_clusters, self.kmeans_iters, gen)
        ki, ci = kmeans(self.item_embedding.weight, self.num_clusters, self.kmeans_iters, gen)
        self.centroids = (F.normalize(ku, dim=1), F.normalize(ki, dim=1))
        self.user_cluster, self.item_cluster = cu, ci
        node_cluster = torch.cat([cu, ci + ku.shape[0]])
        n_cl = ku.shape[0] + ki.shape[0]
        order = torch.argsort(node_cluster, stable=True)
        indptr = torch.zeros(n_cl + 1, dtype=torch.long, device=node_cluster.device)
        indptr[1:] = torch.cumsum(torch.bincount(node_cluster, minlength=n_cl), 0)
        self.node_cluster = node_cluster
        self.cluster_csr = S.CSR(indptr, order, self.n_nodes)
        self._clusters_epoch = self._epoch
        if self.sample_adj == "cluster":
            self._draw_fn.reset()  # the captured draw read the old cluster tensors

    def _ensure_clusters(self) -> None:
        need = self.sample_adj == "cluster" or (self.proto_weight > 0 and self._warm())
        if need and (self._clusters_epoch != self._epoch or self.node_cluster is None):
            self.e_step()

    # -- sampling ------------------------------------------------------------------
    def _centres(self, interaction):
        """``[B]`` centre node ids: ``n_user_centres`` users, ``n_item_centres`` items (ids offset
        by ``n_users``), then ``n_node_centres`` drawn over users and items together."""
        dev = self.graph.indptr.device
        if self.centre_source == "batch":
            u = torch.unique(interaction[self.USER_ID])
            i = torch.unique(interaction[self.ITEM_ID]) + self.n_users
            out = [u[torch.randperm(u.numel(), device=dev)[: self.n_user_centres]],
                   i[torch.randperm(i.numel(), device=dev)[: self.n_item_centres]]]
            if self.n_node_centres:
                both = torch.cat([u, i])
                out.append(both[torch.randperm(both.numel(), device=dev)[: self.n_node_centres]])
        else:  # id 0 of users and of items is RecBole's padding id
            out = [torch.randint(1, max(self.n_users, 2), (self.n_user_centres,), device=dev),
                   torch.randint(1, max(self.n_items, 2), (self.n_item_centres,), device=dev) + self.n_users]
            if self.n_node_centres:  # uniform over the n_users - 1 + n_items - 1 real nodes
                r = torch.randint(0, max(self.n_users + self.n_items - 2, 1), (self.n_node_centres,), device=dev)
                out.append(torch.where(r < self.n_users - 1, r + 1, r + 2))
        return torch.cat(out)

    def _group(self, centres):
        """``[B]`` group of each subgraph by its centre: 0 users, 1 items (``ot_groups: ui``), or
        0 for all (``joint``): negatives, pruning thresholds and the loss's mean stay within a
        group."""
        if self.ot_groups == "joint":
            return torch.zeros_like(centres)
        return (centres >= self.n_users).long()

    def sample(self, centres):
        return S.sample_subgraphs(
            self.graph, centres, self.k1, self.k2, source=self.sample_adj, a2=self.a2,
            clusters=self.cluster_csr, node_cluster=self.node_cluster,
        )

    def _structure(self, nodes, scope=None):
        """GW structure cost :math:`C_s` ``[B, k, k]`` from an adjacency (``subg1_adj`` A or A2);
        ``scope``: see :func:`structure_cost`."""
        if self.subg1_adj == "A":
            adj = S.subgraph_adjacency(nodes, self.edge_keys, self.n_nodes)
        elif self.a2_weights == "counts":
            adj = S.shared_neighbour_adjacency(nodes, self.graph, counts=True)
        elif self.a2 is not None:
            adj = S.subgraph_adjacency(nodes, self.a2_keys, self.n_nodes)
        else:
            adj = S.shared_neighbour_adjacency(nodes, self.graph)
        adj = adj.to(self.user_embedding.weight.dtype)
        scope = scope if self.prune_scope == "batch" else None
        return structure_cost(adj, self.ot_cost, self.ot_tau, self.ot_prune, scope)

    def _draw(self, centres):
        """Everything random and non-differentiable of one batch's OT term, from its centres.

        Returns ``(nodes [B, k], sigma [B], coef [K, B], cs)``: the subgraphs; ``sigma[b]``,
        the subgraph whose views are ``b``'s negatives (a random cyclic derangement within
        each group of :meth:`_group`); each subgraph's loss weight per distance (``mix``
        times its mask over its group's normaliser, 0 where its centre or its negative was
        dropped); and the adjacency structure cost ``[B, k, k]`` (empty unless GW uses one).
        Static shapes, no host sync: on CUDA it is replayed from a graph (:attr:`_draw_fn`).
        """
        nodes, valid = self.sample(centres)
        b = centres.numel()
        group = self._group(centres)
        sigma = S.group_derangement(group, 2)
        ok = valid & valid[sigma] & (sigma != torch.arange(b, device=centres.device))
        w = ok.to(self.user_embedding.weight.dtype)
        total = torch.zeros(2, dtype=w.dtype, device=w.device).index_add_(0, group, w)[group]
        per_pair = self._n_pairs if self.ot_loss_form == "bce" else 1  # GSC's BCE averages over all pairs
        share = w / (total * per_pair).clamp_min(1.0)
        coef = torch.stack([share * mix for mix in self._mix])
        need_cs = self._need_gw and self.subg1_adj != "xx"
        cs = self._structure(nodes, subgraph_scope(group, ok)) if need_cs else nodes.new_empty(0)
        return nodes, sigma, coef, cs

    # -- views ---------------------------------------------------------------------
    def _layer_view(self, layers, spec, readout=None):
        """A view of every node from the layers: ``mean`` (0..L), ``mean1`` (1..L), ``next``
        (layer L+1, one more product), a layer index, or the mean of a tuple of layers."""
        if spec == "mean":
            return readout if readout is not None else torch.stack(layers, dim=1).mean(dim=1)
        if spec == "mean1":
            return torch.stack(layers[1:], dim=1).mean(dim=1)
        if spec == "next":
            return propagate_symmetric(self.norm_adj_matrix, layers[-1])
        if isinstance(spec, tuple):
            return torch.stack([layers[i] for i in spec], dim=1).mean(dim=1)
        return layers[spec]

    def _in_edges(self, rows):
        """In-edges of ``rows``: ``(owner [E], src [E])``, ``owner`` indexing into ``rows``."""
        g = self.graph
        deg = g.degree(rows)
        owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), deg)
        starts = torch.cumsum(deg, 0) - deg
        pos = g.indptr[rows][owner] + torch.arange(owner.numel(), device=rows.device) - starts[owner]
        return owner, g.indices[pos]

    def _rows_propagate(self, x_all, rows):
        """Rows ``rows`` of ``A_hat @ x_all`` (layer L+1 at the sampled nodes, no full spmm)."""
        owner, src = self._in_edges(rows)
        deg = (self.graph.indptr[1:] - self.graph.indptr[:-1]).to(x_all.dtype) + 1e-7
        w = deg[rows][owner].rsqrt() * deg[src].rsqrt()
        out = x_all.new_zeros(rows.numel(), x_all.shape[1])
        return out.index_add_(0, owner, gather_rows(x_all, src) * w.unsqueeze(1))

    def _gat_rows(self, x_all, rows, x_rows=None):
        """GATConv output at ``rows`` only: a bipartite call over their in-edges.
        ``x_rows`` is ``x_all[rows]`` when the caller has it already."""
        owner, src = self._in_edges(rows)
        edge_index = torch.stack([torch.arange(src.numel(), device=rows.device), owner])
        x = (gather_rows(x_all, src), gather_rows(x_all, rows) if x_rows is None else x_rows)
        out = self.gat(x, edge_index, size=(src.numel(), rows.numel()))
        return self.gat_act(out)

    def views(self, layers, nodes, readout=None):
        """``(z1, z2)`` at the sampled ``nodes [B, k]`` -> two ``[B, k, d]`` tensors.
        ``readout`` (the mean of all layers, already computed for BPR) is reused for "mean"."""
        flat = nodes.reshape(-1)
        if self.z1_spec == "gat":  # the GAT's view of ot_z1_gat_input, as z2's of ot_gat_input
            z1_all = None
            z1 = self._gat_rows(self._layer_view(layers, self.z1_gat_input, readout), flat)
        else:
            z1_all = self._layer_view(layers, self.z1_spec, readout)
            z1 = gather_rows(z1_all, flat)
        spec = self.z2_spec
        if spec == "gat":
            if self.gat_input == "z1":
                z2 = self._gat_rows(z1_all, flat, z1)
            else:
                z2 = self._gat_rows(self._layer_view(layers, self.gat_input, readout), flat)
        elif spec == "next":
            z2 = self._rows_propagate(layers[-1], flat)
        elif spec == "last":
            z2 = gather_rows(layers[-1], flat)
        elif spec == "simgcl":
            z2 = gather_rows(self._layer_view(self.propagate(perturbed=True), self.simgcl_spec), flat)
        else:
            z2 = gather_rows(self._layer_view(layers, spec), flat)
        b, k = nodes.shape
        return z1.view(b, k, -1), z2.view(b, k, -1)

    def perturb(self, emb: torch.Tensor, layer: int) -> torch.Tensor:
        """SimGCL's noise after every layer of the ``simgcl`` view's forward
        (:meth:`LightGCNBase.propagate` with ``perturbed=True``)."""
        return emb + simgcl_noise(emb, self.simgcl_eps)

    # -- the OT term ---------------------------------------------------------------
    def ot_term(self, layers, interaction, readout=None) -> torch.Tensor:
        """The OT contrast of one batch (before ``ot_weight``).

        Shapes: ``B`` subgraphs of ``k`` nodes, ``P`` pairs per subgraph (the positive
        ``(z1, z2)`` and one or two negatives), ``K`` distances (W and/or GW). The random
        part is :meth:`_draw`; every cost comes from one stacked call (:func:`pair_costs`),
        the plans from one graph replay on CUDA, and the loss from one call
        (:func:`pair_loss`).
        """
        nodes, sigma, coef, cs = self._draw_fn(self._centres(interaction))
        z1, z2 = self.views(layers, nodes, readout)
        xx = self._need_gw and self.subg1_adj == "xx"
        scope = None
        if self.prune_scope == "batch":  # GSC: one threshold per kind of cost over a group's pairs
            scope = subgraph_scope(self._group(nodes[:, -1]), coef.sum(0) > 0)  # the centre is last
        costs = self._pair_costs(z1, z2, sigma, self.ot_negatives, self._need_gw, xx, self.ot_cost, self.ot_tau,
                                 self.ot_prune, self.cost_shift, scope, self.normalize)
        p = self._n_pairs
        c = costs[:p]
        ct = costs[p : 2 * p] if self._need_gw else None
        cs = costs[2 * p] if xx else (cs if self._need_gw else None)
        if self.detach_plan:
            args = (c.detach(), None if cs is None else cs.detach(), None if ct is None else ct.detach())
            if self._triton_unchecked:
                self._check_triton(*args)
            t_wd, gamma = self._plans(*args)
        else:
            t_wd = O.ipot(c, self.wd_beta, self.wd_iters, round=self.round_plan)
            gamma = (O.gw_plan(cs, ct, self.gw_beta, self.gw_outer, self.gw_inner, round=self.round_plan, detach=False)
                     if self._need_gw else None)
        return self._pair_loss(c, ct, cs, t_wd, gamma, coef, self.ot_distance, self.gw_plan, self.t_wd, self.t_gwd,
                               self.ot_loss_form)

    def _check_triton(self, c, cs, ct) -> None:
        """Once, on the first batch: the Triton plans against PyTorch's on the same costs.
        ``auto`` falls back to PyTorch, with a warning, on any difference beyond float32
        noise or any error (no Triton, an unsupported GPU, a compiler failure); ``triton``
        raises instead. Inputs the kernels do not take go to PyTorch silently."""
        from .ot import triton_plans as triton_ot

        self._triton_unchecked = False
        if self.ot_solver == "auto" and not _on_gpu(c):  # the kernels are for GPUs
            self._plans = self._plan_solver(triton=False)
            return
        if not triton_ot.supported(c, cs, ct):
            if self.ot_solver == "triton" and c.is_cuda:
                raise RuntimeError("ot_solver=triton: the Triton kernels do not take these plans "
                                   f"(Triton importable: {triton_ot.triton_available()}, float32 and sides <= {triton_ot.MAX_SIDE} needed)")
            return
        problem = None
        try:
            problem = _triton_plan_problem(c, cs, ct, self._plan_args)
        except Exception as exc:  # noqa: BLE001 - a fast path must never cost a run
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if problem is None:
            return
        if self.ot_solver == "triton":
            raise RuntimeError(f"ot_solver=triton: {problem}")
        warnings.warn(f"LightGCNOT: Triton OT plans not used ({problem}); using PyTorch's")
        self._plans = self._plan_solver(triton=False)

    def _plan_solver(self, triton: bool) -> O.CudaGraphed:
        """The detached plans of this model's settings, replayed from CUDA graphs on a GPU."""
        return O.CudaGraphed(functools.partial(O.ot_plans, **self._plan_args, triton=triton))

    # -- the prototype term (NCL) ----------------------------------------------------
    def proto_term(self, interaction) -> torch.Tensor:
        user = interaction[self.USER_ID]
        item = interaction[self.ITEM_ID]
        cu, ci = self.centroids
        u = F.normalize(self.user_embedding(user), dim=1)
        i = F.normalize(self.item_embedding(item), dim=1)
        return self.proto_weight * (
            L.info_nce(u @ cu.t() / self.proto_temp, self.user_cluster[user])
            + L.info_nce(i @ ci.t() / self.proto_temp, self.item_cluster[item])
        )

    def calculate_loss(self, interaction):
        self._clear_cache()
        self._ensure_clusters()
        layers = self.propagate()
        readout = self.readout(layers)
        user_all, item_all = self.split(readout)
        bpr, reg = self.bpr_reg(interaction, user_all, item_all, extra_reg=self._gat_params())
        zero = bpr.new_zeros(())
        if self.bpr_weight != 1.0:  # at 1 BPR is left exactly as computed
            bpr = self.bpr_weight * bpr if self.bpr_weight > 0 else zero
        ot_on = self.ot_weight > 0 and (self._warm() or not self.warmup_all)
        ot = self.ot_weight * self.ot_term(layers, interaction, readout) if ot_on else zero
        if self.proto_weight <= 0:
            return bpr, reg, ot
        proto = self.proto_term(interaction) if self._warm() else zero
        return bpr, reg, ot, proto

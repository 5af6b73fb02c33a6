"""The batched OT term equals the plain per-group computation, value and gradients.

``LightGCNOT.ot_term`` makes every pair's cost with one stacked call, broadcasts the
structure cost instead of repeating it, and computes every loss (W and GW, users and
items) in one call. The reference below is the textbook form it replaced: repeat
``z1`` for each pair, one cost matrix per kind, one loss per (distance, group) with
:func:`gsc_bce` / :func:`distance_info_nce`. Both see the same draw.
"""

import pytest
import torch

from models import LightGCNOT
from models.ot import losses as L
from models.ot import solvers as O

CASES = {
    "default": {},
    "infonce": {"ot_loss": "infonce"},
    "wd_only_neg_z1": {"ot_distance": "wd", "ot_negatives": "z1"},
    "gwd_only_xx_neg_z2": {"ot_distance": "gwd", "subg1_adj": "xx", "ot_negatives": "z2"},
    "gw_plan_cos_cost": {"gw_plan": "gw", "ot_cost": "cos", "ot_mix": 0.3},
    "detach_plan": {"ot_detach_plan": True},
    # the defaults before they were GSC's: per-problem min/max and shift, rounded plans
    "per_problem_shifted_rounded": {"ot_prune_scope": "problem", "ot_cost_shift": "always", "ot_round_plan": True,
                                    "ot_detach_plan": True},
    # exp(1/tau) overflows float32 (not float64): auto shifts per kind and group; run in float32
    "tiny_tau_auto_shift": {"ot_tau": 0.03, "ot_prune": -1, "ot_loss": "infonce"},  # pruned or BCE: no gradient left
    "dropped_centres": {"ot_loss": "infonce"},  # two centres' subgraphs marked invalid below
    "dropped_centres_bce": {},
}


def reference_ot(m: LightGCNOT, layers, nodes, sigma, neg_ok):
    """One GSC ``sub_loss_batch`` per group (users, then items) over the subgraphs that enter
    the loss, each pruned (and shifted) over its own stacked batch, or per problem."""
    z1, z2 = m.views(layers, nodes)  # readout recomputed here: also checks its reuse
    parts = [z2]
    if m.ot_negatives in ("both", "z1"):
        parts.append(z1[sigma])
    if m.ot_negatives in ("both", "z2"):
        parts.append(z2[sigma])
    p = len(parts)
    scope = "batch" if m.prune_scope == "batch" else None

    def cost(a, b):
        return O.prune_cost(O.cost_matrix(a, b, m.ot_cost, m.ot_tau, m.cost_shift, scope), m.ot_prune, scope)

    need_gw = m.ot_distance in ("both", "gwd")
    src = (lambda t: t.detach()) if m.detach_plan else (lambda t: t)
    is_item = nodes[:, -1] >= m.n_users
    total = z1.new_zeros(())
    for grp in (~is_item, is_item):
        sel = grp & neg_ok
        if not sel.any():
            continue
        x, y = z1[sel], torch.cat([part[sel] for part in parts])
        c = cost(x.repeat(p, 1, 1), y)
        t_wd = O.ipot(src(c), m.wd_beta, m.wd_iters, round=m.round_plan)
        terms = []
        if m.ot_distance in ("both", "wd"):
            terms.append((m.ot_mix if m.ot_distance == "both" else 1.0, O.batch_trace_dot(c, t_wd), m.t_wd))
        if need_gw:
            if m.subg1_adj == "xx":
                cs = cost(x, x)
            else:
                cs = m._structure(nodes[sel], torch.zeros(int(sel.sum()), dtype=torch.long))
            cs, ct = cs.repeat(p, 1, 1), cost(y, y)
            gamma = O.gw_plan(src(cs), src(ct), m.gw_beta, m.gw_outer, m.gw_inner, round=m.round_plan,
                              detach=m.detach_plan)
            plan = t_wd if m.gw_plan == "wd" else gamma
            terms.append((1.0 - m.ot_mix if m.ot_distance == "both" else 1.0,
                          O.batch_trace_dot(O.gw_tensor(cs, ct, gamma), plan), m.t_gwd))
        for weight, d, t in terms:
            d = d.view(p, -1)
            loss = L.gsc_bce if m.ot_loss_form == "bce" else L.distance_info_nce
            total = total + weight * loss(d[0], d[1:].t(), t)
    return total


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_ot_term_equals_per_group_reference(recbole_env, case):
    """In float64, so that what is compared is the arithmetic, not float32's rounding (which
    the gradients through 140 IPOT iterations amplify to ~1e-3 of their largest entry);
    the case whose point is float32's range runs in float32."""
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, embedding_size=16, **CASES[case])
    torch.manual_seed(0)
    model = LightGCNOT(cfg, tr._dataset)
    wide = case != "tiny_tau_auto_shift"
    if wide:
        model.double()
        model.norm_adj_matrix = model.norm_adj_matrix.double()
    model.train()
    inter = next(iter(tr))
    sample, sampled = model.sample, []

    def sample_recorded(centres):  # in the "dropped" cases, as if centres 1 (a user) and 7 (an item) had too few neighbours
        nodes, valid = sample(centres)
        if case.startswith("dropped"):
            valid = valid.clone()
            valid[[1, 7]] = False
        sampled.append(valid)
        return nodes, valid

    model.sample = sample_recorded
    drawn = []
    draw = model._draw_fn

    def record(*args):
        out = draw(*args)
        drawn.append(out)
        return out

    model._draw_fn = record
    layers = model.propagate()
    batched = model.ot_term(layers, inter, model.readout(layers))
    nodes, sigma, coef, _ = drawn[0]
    valid = sampled[0]
    neg_ok = valid & valid[sigma] & (sigma != torch.arange(sigma.numel()))  # worked out here, not by the model
    assert torch.equal(coef[0] > 0, neg_ok) and neg_ok.any()
    if case.startswith("dropped"):
        assert neg_ok.sum() == 6  # 1 and 7, and the two subgraphs whose negatives they are, drop out
    ref = reference_ot(model, layers, nodes, sigma, neg_ok)
    assert batched.item() != 0.0 and batched.dtype == (torch.float64 if wide else torch.float32)
    tol = 1e-9 if wide else 1e-3  # of the largest entry
    torch.testing.assert_close(batched, ref, rtol=tol / 50, atol=1e-7)

    params = [model.user_embedding.weight, model.item_embedding.weight] + list(model._gat_params())
    g_batched = torch.autograd.grad(batched, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    for a, b in zip(g_batched, g_ref):
        if a is None or b is None:
            assert a is None and b is None
            continue
        scale = b.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


# ATen ops that read device memory back to the host on CUDA (a sync, and a failed CUDA-graph
# capture): scalar reads, data-dependent output sizes.
HOST_READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select",
              "repeat_interleave", "bincount", "histc", "bool-mask index",
              "lift_fresh", "lift_fresh_copy"}  # the last two: a tensor made from host data (a copy to the GPU)


@pytest.mark.parametrize("overrides", [
    {}, {"sample_adj": "A2", "subg1_adj": "A2", "a2_max_paths": 1e9}, {"subg1_adj": "xx", "ot_distance": "gwd"},
    {"sample_adj": "cluster", "num_clusters": 20, "k1": 0}, {"ot_loss": "infonce", "ot_negatives": "z2"},
])
def test_graphed_steps_never_read_the_device_from_the_host(recbole_env, overrides):
    """What LightGCNOT replays from CUDA graphs (the draw and the plans) must be capturable.
    Capture itself needs a GPU; its precondition, no host read, is checked op by op here."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).split(".")[-1]
            self.names.add(name)
            if name.startswith(("index", "_index_put")) and len(args) > 1 and isinstance(args[1], (list, tuple)):
                if any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in args[1]):
                    self.names.add("bool-mask index")  # a nonzero in disguise
            return func(*args, **(kwargs or {}))

    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, **overrides)
    model = LightGCNOT(cfg, tr._dataset)
    model.train()
    model._ensure_clusters()
    assert model._draw_fn.enabled and model._plans.enabled
    centres = model._centres(next(iter(tr)))
    seen = Ops()
    with seen:
        nodes, sigma, coef, cs = model._draw_fn.fn(centres)
    assert not seen.names & HOST_READS, seen.names & HOST_READS
    z = torch.randn(2, *nodes.shape, 8)
    c = O.prune_cost(O.cost_matrix(z[0].expand(3, *z[0].shape), z[1].expand(3, *z[1].shape)))
    seen = Ops()
    with seen:
        model._plans.fn(c, cs if cs.numel() else c[0], c)
    assert not seen.names & HOST_READS, seen.names & HOST_READS


def test_a2_structure_found_by_sort_join_is_not_graphed(recbole_env):
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, sample_adj="A2", subg1_adj="A2", a2_max_paths=0)
    model = LightGCNOT(cfg, tr._dataset)
    assert model.a2 is None and not model._draw_fn.enabled  # its pair count is data-dependent


def test_compiled_term_equals_eager(recbole_env):
    """ot_compile: the costs and the loss through torch.compile give the eager numbers. In
    float64: the plans are recomputed from the compiled costs, and in float32 the GW plan
    turns their last-bit differences into ~1e-4 of the loss (see ``_triton_plan_problem``)."""
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, embedding_size=16)
    cfg_c, _, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, embedding_size=16, ot_compile=True)
    inter = next(iter(tr))
    out = []
    for c in (cfg, cfg_c):
        torch.manual_seed(0)
        model = LightGCNOT(c, tr._dataset)
        model.double()
        model.norm_adj_matrix = model.norm_adj_matrix.double()
        model.train()
        torch.manual_seed(1)  # the same draw
        layers = model.propagate()
        loss = model.ot_term(layers, inter, model.readout(layers))
        out.append((loss, torch.autograd.grad(loss, [model.user_embedding.weight, model.gat.lin.weight])))
    (eager, g_eager), (compiled, g_compiled) = out
    assert eager.item() != 0.0 and eager.dtype == torch.float64
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=0)
    for a, b in zip(g_compiled, g_eager):  # compiled sums round differently: 1e-8 of the largest entry
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8 * b.abs().max().item())

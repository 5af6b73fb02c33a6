"""LightGCNOT's switches for the notebook's rows that GSC's defaults cannot make: each
against a direct float64 computation of its formula (and against GOT's or GSC's formula
where one of them defines it), and each at its default against the computation it had
before it existed.

``bpr_weight`` ("wobpr"), ``param_init`` ("wo_init_pam"), ``ot_normalize`` ("no_norm" /
"normxy"), layer lists for the views ("z1:01_z2:0123"), ``ot_z1: gat`` with
``ot_z1_gat_input`` ("z1:gat1"), ``ot_gat_input: next`` ("gat4"), ``ot_simgcl_input``
("没加inital emb"), ``a2_weights`` ("noguiyi"), ``n_node_centres`` ("300batch") and
``ot_groups`` ("ui").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import LightGCNOT
from models import lightgcn_ot as M
from models.lightgcn_base import xavier_uniform_initialization
from models.ot import sampling as S


def _model(recbole_env, seed=0, **overrides):
    cfg, tr, _, _ = recbole_env(LightGCNOT, **overrides)
    torch.manual_seed(seed)
    return LightGCNOT(cfg, tr._dataset), tr


def _prune(c, beta=0.1):
    """GSC's ``relu(C - (min + beta (max - min)))`` over the whole array (one threshold)."""
    lo, hi = c.min(), c.max()
    return np.maximum(c - (lo + beta * (hi - lo)), 0.0)


ONE = torch.zeros(4, dtype=torch.long)  # pair_costs' scope: the four subgraphs are one group


def _views(seed=0, b=4, k=5, d=6, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, k, d, generator=g, dtype=torch.float64) * scale
    z2 = torch.randn(b, k, d, generator=g, dtype=torch.float64) * scale
    return z1, z2


# ---------------------------------------------------------------------------- bpr_weight


def test_bpr_weight_scales_bpr_and_0_trains_without_it(recbole_env):
    base, tr = _model(recbole_env, ot_weight=1e-3)
    inter = next(iter(tr))
    torch.manual_seed(1)
    bpr1, reg1, ot1 = base.calculate_loss(inter)
    # BPR as RecBole defines it, in float64 from the model's own readout
    u_all, i_all = base.forward()
    u = u_all[inter[base.USER_ID]].double()
    d = (u * i_all[inter[base.ITEM_ID]].double()).sum(1) - (u * i_all[inter[base.NEG_ITEM_ID]].double()).sum(1)
    want = -torch.log(1e-10 + torch.sigmoid(d)).mean()
    assert abs(bpr1.item() - want.item()) < 1e-6 * want.item()
    for w in (0.3, 0.0):
        other, _ = _model(recbole_env, ot_weight=1e-3, bpr_weight=w)
        torch.manual_seed(1)
        bpr, reg, ot = other.calculate_loss(inter)
        assert abs(bpr.item() - w * want.item()) <= 1e-6 * want.item()
        assert torch.equal(reg, reg1) and torch.equal(ot, ot1)  # the other terms untouched
    # without BPR the gradient is the rest's alone
    torch.manual_seed(1)
    sum(other.calculate_loss(inter)).backward()
    torch.manual_seed(1)
    _, reg, ot = base.calculate_loss(inter)
    (reg + ot).backward()
    assert torch.equal(other.user_embedding.weight.grad, base.user_embedding.weight.grad)


# ---------------------------------------------------------------------------- param_init


def test_param_init_none_keeps_the_constructors_draws(recbole_env):
    """``none``: the embeddings are the first two draws after the seed, N(0, 1) (moments in
    float64), and the GAT is PyG's GATConv as constructed right after them."""
    from torch_geometric.nn import GATConv

    model, _ = _model(recbole_env, seed=4, param_init="none", ot_z2="gat")
    torch.manual_seed(4)
    users = torch.empty(model.n_users, model.latent_dim).normal_()
    items = torch.empty(model.n_items, model.latent_dim).normal_()
    gat = GATConv(model.latent_dim, model.latent_dim, heads=1, add_self_loops=False)
    assert torch.equal(model.user_embedding.weight, users) and torch.equal(model.item_embedding.weight, items)
    for (name, a), (_, b) in zip(model.gat.named_parameters(), gat.named_parameters()):
        assert torch.equal(a, b), name
    w = torch.cat([users, items]).double()
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1.0) < 0.02


def test_param_init_xavier_is_recboles_init(recbole_env):
    """The default: RecBole's ``xavier_uniform_initialization`` on every embedding, as before
    the switch, bit for bit; entries within Xavier's bound sqrt(6 / (fan_in + fan_out))."""
    from torch_geometric.nn import GATConv

    model, _ = _model(recbole_env, seed=4)
    torch.manual_seed(4)
    users = torch.nn.Embedding(model.n_users, model.latent_dim)
    items = torch.nn.Embedding(model.n_items, model.latent_dim)
    for made in range(2):  # the backbone's init; the GAT is made; LightGCNOT's own init
        users.apply(xavier_uniform_initialization)
        items.apply(xavier_uniform_initialization)
        if not made:
            GATConv(model.latent_dim, model.latent_dim, heads=1, add_self_loops=False)
    assert torch.equal(model.user_embedding.weight, users.weight) and torch.equal(model.item_embedding.weight, items.weight)
    bound = (6.0 / (model.n_users + model.latent_dim)) ** 0.5
    assert model.user_embedding.weight.abs().max().item() <= bound


# ---------------------------------------------------------------------------- costs


@pytest.mark.parametrize("shift", ["always", "auto"])
def test_raw_inner_product_costs_are_the_notebooks(shift):
    """``ot_normalize: false`` ("no_norm"): C = prune(exp(-<x, y>/tau - s)), s the largest
    -<x, y>/tau of the batch ("nc", the notebook's shift) or, for ``auto``, only what keeps
    every cost below e^L; float64, one threshold over the stacked batch as GSC's ``wd``."""
    z1, z2 = _views(scale=3.0)
    tau = 0.5
    sigma = torch.tensor([1, 2, 3, 0])
    got = M.pair_costs(z1, z2, sigma, "both", False, False, "exp", tau, 0.1, shift, ONE, normalize=False)
    x, y = z1.numpy(), z2.numpy()
    pairs = np.stack([y, x[sigma.numpy()], y[sigma.numpy()]])  # positive, then negatives' z1 and z2
    logits = -np.einsum("bid,pbjd->pbij", x, pairs) / tau
    s = logits.max() if shift == "always" else max(0.0, logits.max() - np.log(np.finfo(np.float64).max) / 4)
    want = _prune(np.exp(logits - s))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-300)
    # the cosine is not taken: scaling the views scales the logits
    again = M.pair_costs(z1 * 2, z2, sigma, "both", False, False, "exp", tau, 0.1, shift, ONE, normalize=False)
    assert not torch.allclose(again, got)


def test_raw_inner_products_never_overflow_under_auto():
    """Unnormalised rows can be large (N(0, 1) embeddings of 64 dims); ``auto`` then shifts by
    just enough, so every float32 cost is finite where the unshifted one is inf."""
    z1, z2 = (v.float() for v in _views(d=64, scale=4.0))
    sigma = torch.tensor([1, 2, 3, 0])
    raw = M.pair_costs(z1, z2, sigma, "both", True, True, "exp", 0.5, 0.1, "never", ONE, normalize=False)
    safe = M.pair_costs(z1, z2, sigma, "both", True, True, "exp", 0.5, 0.1, "auto", ONE, normalize=False)
    assert not torch.isfinite(raw).all() and torch.isfinite(safe).all() and safe.max() > 0


def test_normalised_costs_are_gscs_and_gots():
    """``ot_normalize: true`` (default, "normxy"): the rows' cosines. ``exp`` against GSC's
    ``cost_matrix_batch`` + ``wd``'s pruning, ``cos`` against GOT's ``cos_batch_torch``
    (``1 - cos``, pruned), each written out in float64 as GSC and GOT write it
    (``x / (|x| + 1e-12)``)."""
    z1, z2 = _views(seed=3)
    sigma = torch.tensor([2, 3, 0, 1])
    x, y = z1.numpy(), z2.numpy()
    xn = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
    yn = y / (np.linalg.norm(y, axis=-1, keepdims=True) + 1e-12)
    s = sigma.numpy()
    cos_xy = np.stack([np.einsum("bid,bjd->bij", xn, yn), np.einsum("bid,bjd->bij", xn, yn[s])])  # positive, negative
    cos_yy = np.einsum("bid,bjd->bij", yn, yn)
    gsc = M.pair_costs(z1, z2, sigma, "z2", True, False, "exp", 0.5, 0.1, "never", ONE)
    np.testing.assert_allclose(gsc[:2].numpy(), _prune(np.exp(-cos_xy / 0.5)), rtol=1e-9, atol=1e-12)
    got = M.pair_costs(z1, z2, sigma, "z2", True, False, "cos", 0.5, 0.1, "never", ONE)
    np.testing.assert_allclose(got[:2].numpy(), _prune(1.0 - cos_xy), rtol=1e-9, atol=1e-12)
    # C_t of both second views: GOT's cos_batch_torch(Y, Y), one threshold over their rows
    ct = got[2:4].numpy()
    want = _prune(1.0 - np.stack([cos_yy, cos_yy[sigma.numpy()]]))
    np.testing.assert_allclose(ct, want, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- views


def test_layer_lists_average_those_layers(recbole_env):
    """``z1:01_z2:0123``: each view is the mean of its listed layers (float64 reference)."""
    model, _ = _model(recbole_env, ot_z1=[0, 1], ot_z2=[0, 1, 2, 3], n_layers=3)
    layers = model.propagate()
    nodes = torch.tensor([[3, 7, 1000], [12, 950, 1500]])
    z1, z2 = model.views(layers, nodes, model.readout(layers))
    wide = [layer.double()[nodes] for layer in layers]
    torch.testing.assert_close(z1.double(), (wide[0] + wide[1]) / 2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(z2.double(), sum(wide) / 4, rtol=1e-6, atol=1e-7)
    default, _ = _model(recbole_env, ot_z1=[0, 1, 2, 3], ot_z2="last", n_layers=3)  # [0..L] is "mean"
    same, _ = _model(recbole_env, ot_z1="mean", ot_z2="last", n_layers=3)
    a = default.views(default.propagate(), nodes)[0]
    b = same.views(same.propagate(), nodes)[0]
    assert torch.equal(a, b)


def _full_gat(model, x):
    """PyG's GATConv over the whole graph (no self loops), then the model's activation: the
    generator as GSC runs it on every node."""
    g = model.graph
    dst = torch.repeat_interleave(torch.arange(g.n_rows), g.indptr[1:] - g.indptr[:-1])
    edge_index = torch.stack([g.indices, dst])
    return model.gat_act(model.gat(x, edge_index))


def test_gat_views_of_other_layers(recbole_env):
    """``z1:gat1_z2:gat3``: both views from the one GAT, over layer 1 and layer 3; ``gat4``:
    over layer L+1 = A_hat E_L (float64 product for the reference)."""
    model, _ = _model(recbole_env, ot_z1="gat", ot_z1_gat_input=1, ot_z2="gat", ot_gat_input=3, n_layers=3)
    layers = model.propagate()
    nodes = torch.tensor([[3, 7, 1000], [12, 950, 1500]])
    z1, z2 = model.views(layers, nodes)
    torch.testing.assert_close(z1, _full_gat(model, layers[1])[nodes], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z2, _full_gat(model, layers[3])[nodes], rtol=1e-5, atol=1e-6)
    four, _ = _model(recbole_env, ot_z1=-2, ot_z2="gat", ot_gat_input="next", n_layers=3)
    layers = four.propagate()
    adj = four.norm_adj_matrix.double()
    nxt = torch.sparse.mm(adj, layers[3].double()).float()
    z1, z2 = four.views(layers, nodes)
    torch.testing.assert_close(z2, _full_gat(four, nxt)[nodes], rtol=1e-5, atol=1e-6)
    assert torch.equal(z1, layers[2][nodes])


def test_simgcl_view_can_leave_layer_0_out_while_z1_keeps_it(recbole_env):
    """``z1_sm03_z2_simgcl(没加inital emb)``: z1 the mean of layers 0..L, z2 the perturbed
    forward's mean of layers 1..L (same draws, written out by hand)."""
    model, _ = _model(recbole_env, ot_z1="mean", ot_z2="simgcl", ot_simgcl_input="mean1", n_layers=3)
    layers = model.propagate()
    nodes = torch.tensor([[3, 7, 1000]])
    torch.manual_seed(9)
    z1, z2 = model.views(layers, nodes)
    torch.manual_seed(9)
    emb, out = model.get_ego_embeddings(), []
    for _ in range(3):
        emb = torch.sparse.mm(model.norm_adj_matrix, emb)
        emb = emb + torch.sign(emb) * F.normalize(torch.rand_like(emb), dim=-1) * model.simgcl_eps
        out.append(emb)
    assert torch.equal(z2, torch.stack(out, 1).mean(1)[nodes])
    assert torch.equal(z1, torch.stack(layers, 1).mean(1)[nodes])


# ---------------------------------------------------------------------------- A^2 counts


def test_a2_counts_are_path_counts():
    """``noguiyi``: inside each subgraph, (A^2)_ij = number of 2-paths (common neighbours),
    diagonal 0; the set form is its support. Dense float64 A @ A as the reference."""
    rng = np.random.default_rng(1)
    n_u, n_i = 12, 9
    m = rng.random((n_u, n_i)) < 0.45
    u, i = np.nonzero(m)
    row, col = np.concatenate([u, i + n_u]), np.concatenate([i + n_u, u])
    n = n_u + n_i
    a = np.zeros((n, n))
    a[row, col] = 1.0
    a2 = a @ a
    np.fill_diagonal(a2, 0.0)
    csr = S.csr_from_coo(row, col, n)
    nodes = torch.tensor([[0, 1, 2, 3, 4], [12, 13, 14, 15, 16], [5, 6, 13, 7, 8]])
    want = a2[nodes.numpy()[:, :, None], nodes.numpy()[:, None, :]]
    assert want.max() > 1  # the graph has pairs with several common neighbours
    got = S.shared_neighbour_adjacency(nodes, csr, counts=True)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(S.shared_neighbour_adjacency(nodes, csr).numpy(), (want > 0).astype(float))
    cost = M.structure_cost(got.double(), "exp", 0.5, 0.1)  # GSC's Cs from these counts, per problem
    for b in range(3):
        np.testing.assert_allclose(cost[b].numpy(), _prune(np.exp(-want[b] / 0.5)), rtol=1e-12)


def test_a2_counts_reach_the_structure_cost(recbole_env):
    kw = dict(sample_adj="A2", subg1_adj="A2", k1=0, k2=6, ot_distance="gwd")
    counts, _ = _model(recbole_env, a2_weights="counts", **kw)
    plain, _ = _model(recbole_env, **kw)
    nodes = torch.tensor([[5, 9, 11, 20, 31, 44, 2]])
    c = counts._structure(nodes)
    p = plain._structure(nodes)
    adj = S.shared_neighbour_adjacency(nodes, counts.graph, counts=True)
    assert adj.max() > 1
    torch.testing.assert_close(c, M.structure_cost(adj, "exp", 0.5, 0.1))
    torch.testing.assert_close(p, M.structure_cost((adj > 0).float(), "exp", 0.5, 0.1))


# ---------------------------------------------------------------------------- centres and groups


def test_node_centres_are_real_nodes_of_either_kind(recbole_env):
    model, _ = _model(recbole_env, n_user_centres=0, n_item_centres=0, n_node_centres=4000)
    centres = model._centres(None)
    nu, ni = model.n_users, model.n_items
    assert centres.numel() == 4000
    assert not ((centres == 0) | (centres == nu)).any() and (centres < nu + ni).all()  # no padding id
    share = (centres >= nu).double().mean().item()
    assert abs(share - (ni - 1) / (nu + ni - 2)) < 0.03  # uniform over users and items together
    # the default draws exactly what it drew before: two randint calls, users then items
    default, _ = _model(recbole_env)
    torch.manual_seed(3)
    got = default._centres(None)
    torch.manual_seed(3)
    want = torch.cat([torch.randint(1, nu, (5,)), torch.randint(1, ni, (5,)) + nu])
    assert torch.equal(got, want)


@pytest.mark.parametrize("groups", ["ui", "joint"])
def test_groups_set_negatives_thresholds_and_the_losss_mean(recbole_env, groups):
    """``ui``: a subgraph's negatives come from its own kind and each kind's BCE is a mean
    (weights sum to 1 per kind); ``joint`` (GSC's one ``sub_loss_batch``): negatives from
    any subgraph, one mean over all (weights sum to 1)."""
    model, _ = _model(recbole_env, ot_groups=groups, ot_distance="wd", n_user_centres=6, n_item_centres=6)
    torch.manual_seed(0)
    centres = model._centres(None)
    nodes, sigma, coef, _ = model._draw(centres)
    kind = (centres >= model.n_users).long()
    ok = coef[0] > 0
    per_kind = torch.zeros(2, dtype=coef.dtype).index_add_(0, kind, coef[0] * model._n_pairs)
    if groups == "ui":
        assert torch.equal(kind[sigma], kind)
        torch.testing.assert_close(per_kind, torch.ones(2, dtype=coef.dtype))
    else:
        assert (coef[0] * model._n_pairs).sum().item() == pytest.approx(1.0)
        torch.manual_seed(0)
        crossed = any(bool((kind[model._draw(centres)[1]] != kind).any()) for _ in range(5))
        assert crossed
    assert ok.sum() >= 8

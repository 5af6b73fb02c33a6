"""NCLAblation is RecBole's NCL with its init step as a setting: at ``param_init: xavier``
it is NCL bit for bit; at ``none`` it is NCL with its ``self.apply(xavier_uniform_
initialization)`` line deleted, bit for bit, weights and random stream; and NCL's own
``reg_weight: 0`` is its loss without the reg term."""

import numpy as np
import pytest
import torch
from recbole.model.general_recommender import ncl as recbole_ncl

from models import NCLAblation

NCL = recbole_ncl.NCL
SMALL = {"num_clusters": 20, "embedding_size": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """RecBole's NCL repeats bit for bit on one CPU thread (its ``x[index]`` backward and
    wide sums are ordered by the threads otherwise; docs/reliability.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(recbole_env, cls, seed=11, **overrides):
    cfg, tr, _, _ = recbole_env(cls, **{**SMALL, **overrides})
    torch.manual_seed(seed)
    model = cls(cfg, tr._dataset)
    return model, torch.get_rng_state(), tr


def _step(model, inter):
    """One E-step and one loss with its gradients on ``inter``, from a fixed random state."""
    torch.manual_seed(5)
    np.random.seed(5)
    model.e_step()
    losses = model.calculate_loss(inter)
    sum(losses).backward()
    return [t.detach() for t in losses], [p.grad.clone() for p in model.parameters()]


def _same_state(a, b):
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


def test_xavier_is_recboles_ncl_bit_for_bit(recbole_env):
    ours, rng_ours, tr = _build(recbole_env, NCLAblation)
    theirs, rng_theirs, _ = _build(recbole_env, NCL)
    _same_state(ours, theirs)
    assert torch.equal(rng_ours, rng_theirs)
    inter = next(iter(tr))  # one batch for both: each pass over a loader shuffles anew
    (lo, go), (lt, gt) = _step(ours, inter), _step(theirs, inter)
    assert all(torch.equal(a, b) for a, b in zip(lo + go, lt + gt))


def test_none_is_ncl_without_its_init_line_bit_for_bit(recbole_env, monkeypatch):
    ours, rng_ours, tr = _build(recbole_env, NCLAblation, param_init="none")
    monkeypatch.setattr(recbole_ncl, "xavier_uniform_initialization", lambda module: None)
    theirs, rng_theirs, _ = _build(recbole_env, NCL)
    _same_state(ours, theirs)
    assert torch.equal(rng_ours, rng_theirs)  # the random stream goes on as that code's
    inter = next(iter(tr))  # one batch for both: each pass over a loader shuffles anew
    (lo, go), (lt, gt) = _step(ours, inter), _step(theirs, inter)
    assert all(torch.equal(a, b) for a, b in zip(lo + go, lt + gt))


def test_none_draws_standard_normal_embeddings(recbole_env):
    """The formula, written out: the first two draws after the seed are N(0, 1) of the
    users' and the items' tables; their moments in float64 are N(0, 1)'s, not Xavier's."""
    model, _, _ = _build(recbole_env, NCLAblation, seed=3, param_init="none")
    torch.manual_seed(3)
    users = torch.empty(model.n_users, model.latent_dim).normal_()
    items = torch.empty(model.n_items, model.latent_dim).normal_()
    assert torch.equal(model.user_embedding.weight, users) and torch.equal(model.item_embedding.weight, items)
    w = model.item_embedding.weight.detach().double()
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1.0) < 0.02
    xavier, _, _ = _build(recbole_env, NCLAblation, seed=3)
    b = (6.0 / (xavier.n_items + xavier.latent_dim)) ** 0.5  # fan_in + fan_out of the table
    assert xavier.item_embedding.weight.abs().max().item() <= b and xavier.item_embedding.weight.std().item() < 0.1


def test_reg_weight_0_is_the_loss_without_the_reg_term(recbole_env):
    """NCL's first term with reg_weight 0 is BPR alone: bit for bit the model's own BPR, and
    the BPR formula -mean(log sigmoid(s+ - s-)) computed in float64 from its embeddings."""
    model, _, tr = _build(recbole_env, NCL, reg_weight=0.0)
    torch.manual_seed(5)
    model.e_step()
    inter = next(iter(tr))
    first = model.calculate_loss(inter)[0]
    u_all, i_all, _ = model.forward()
    u = u_all[inter[model.USER_ID]]
    pos, neg = (u * i_all[inter[model.ITEM_ID]]).sum(1), (u * i_all[inter[model.NEG_ITEM_ID]]).sum(1)
    assert torch.equal(first, model.mf_loss(pos, neg).view(1))  # NCL's EmbLoss is [1]: mf + 0 * reg
    d = (pos - neg).detach().double()
    want = -torch.log(1e-10 + torch.sigmoid(d)).mean()  # RecBole's BPRLoss, gamma 1e-10
    assert abs(first.item() - want.item()) < 1e-6 * want.item()


@pytest.mark.parametrize("bad", ["normal", "Xavier"])
def test_param_init_other_values_are_refused(recbole_env, bad):
    with pytest.raises(ValueError, match="param_init"):
        _build(recbole_env, NCLAblation, param_init=bad)

"""Training LightGCNOT on GSC's arithmetic stays finite.

The notebook's runs went NaN (exp(-cos/tau) overflowed once the normalisation was
removed; eps 1e-12 gave NaN gradients at zero vectors). Here the default path (GSC's
arithmetic, gradients through every IPOT iteration) trains on ml-100k with the OT term
weighted 1 (the notebook's 1e-7 would hide a NaN behind float32's rounding of BPR), every
batch's every loss term, gradient and parameter checked. An "epoch" here is the first
``BATCHES`` batches of RecBole's epoch (of ~40), to keep the test near 30 s on one core.
"""

from __future__ import annotations

import pytest
import torch

from models import LightGCNOT

BATCHES = 12


def _train(recbole_env, epochs: int, **overrides):
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, embedding_size=8, n_layers=2, **overrides)
    torch.manual_seed(0)
    model = LightGCNOT(cfg, tr._dataset)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    per_epoch = []
    for epoch in range(epochs):
        model.train()
        sums = torch.zeros(len(model.loss_names), dtype=torch.float64)
        for _, inter in zip(range(BATCHES), tr):
            opt.zero_grad()
            terms = model.calculate_loss(inter)
            assert all(torch.isfinite(t).item() for t in terms), (epoch, [t.item() for t in terms])
            sum(terms).backward()
            for p in model.parameters():
                assert p.grad is None or torch.isfinite(p.grad).all(), epoch
            opt.step()
            sums += torch.tensor([t.item() for t in terms], dtype=torch.float64)
        assert all(torch.isfinite(p).all() for p in model.parameters()), epoch
        per_epoch.append(dict(zip(model.loss_names, sums.tolist())))
    return model, per_epoch


def test_default_path_trains_finite_at_the_notebooks_settings(recbole_env):
    model, per_epoch = _train(recbole_env, 3)
    assert (model.ot_tau, model.t_wd, model.t_gwd) == (0.5, 0.01, 0.1)
    assert (model.prune_scope, model.cost_shift, model.round_plan, model.detach_plan) == ("batch", "auto", False, False)
    ot = [e["ot"] for e in per_epoch]
    assert all(v > 0 for v in ot) and len(set(ot)) == len(ot)  # a real term, drawn anew every batch
    assert per_epoch[-1]["bpr"] < per_epoch[0]["bpr"]  # and the model still learns


@pytest.mark.parametrize("shift", ["auto", "always"])
def test_tau_where_float32_exp_overflows_trains_finite(recbole_env, shift):
    """tau 0.01: exp(1/tau) = e^100 is inf in float32; ``auto`` shifts just enough."""
    _, per_epoch = _train(recbole_env, 1, ot_tau=0.01, ot_cost_shift=shift)
    assert per_epoch[0]["ot"] > 0

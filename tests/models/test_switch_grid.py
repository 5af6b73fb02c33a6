"""Every ablation switch of the notebook, a few batches over several epochs each: every
loss term and every gradient stays finite. ot_weight is 1 here (not 1e-7) so that the OT
gradients are large enough for a NaN to show."""

import itertools

import pytest
import torch

from models import LightGCNOT

# The notebook's table rows, as switches (names as in its table).
NOTEBOOK_ROWS = {
    "default_wg32a": {},
    "wg32x": {"subg1_adj": "xx"},
    "wg02a": {"ot_mix": 0.2},
    "z1-2_z2last": {"ot_z1": -2, "ot_z2": "last"},
    "only_wd_0k1_2k2": {"ot_distance": "wd", "k1": 0, "k2": 2},
    "only_gwd_3k1_2k2_csadj": {"ot_distance": "gwd"},
    "only_gwd_0k1_2k2_csxx": {"ot_distance": "gwd", "k1": 0, "subg1_adj": "xx"},
    "z2_gat_layer3": {"ot_z2": "gat", "ot_gat_input": 3},
    "z1_layer3_z2_next": {"ot_z1": 3, "ot_z2": "next"},
    "z1_sm13_z2_simgcl": {"ot_z1": "mean1", "ot_z2": "simgcl"},
    "z1_sm03_z2_simgcl": {"ot_z1": "mean", "ot_z2": "simgcl"},
    "A2_A2_0k1_9k2": {"sample_adj": "A2", "subg1_adj": "A2", "k1": 0, "k2": 9},
    "A2_A2_0k1_9k2_1515b": {"sample_adj": "A2", "subg1_adj": "A2", "k1": 0, "k2": 9,
                            "n_user_centres": 15, "n_item_centres": 15},
    "A2_xx_0k1_30k2": {"sample_adj": "A2", "subg1_adj": "xx", "k1": 0, "k2": 30},
    "A2_A2_walks": {"sample_adj": "A2", "subg1_adj": "A2", "a2_max_paths": 0},
    "wg06A2x_neg_z1": {"ot_mix": 0.6, "sample_adj": "A2", "subg1_adj": "xx", "ot_negatives": "z1"},
    "wg06A2x_neg_z2": {"ot_mix": 0.6, "sample_adj": "A2", "subg1_adj": "xx", "ot_negatives": "z2"},
    "z1gat1_z2gat3": {"ot_z1": 1, "ot_z2": "gat", "ot_gat_input": 3},
    "ncl_kmeans_0.01": {"proto_weight": 0.01, "proto_warmup": 1, "num_clusters": 30},
    "ncl_kmeans_warmupall": {"proto_weight": 0.01, "proto_warmup": 1, "warmup_all": True, "num_clusters": 30},
    "kmean_A2_55c_5k2": {"sample_adj": "cluster", "subg1_adj": "A2", "k1": 0, "k2": 5, "num_clusters": 30},
    "kmean_xx_55c_10k2": {"sample_adj": "cluster", "subg1_adj": "xx", "k1": 0, "k2": 10, "num_clusters": 30},
    "normxy_1-cd": {"ot_cost": "cos"},
    "infonce": {"ot_loss": "infonce"},
    "T_gw": {"gw_plan": "gw"},
    "detach_plan": {"ot_detach_plan": True},
    "per_problem_shift_round": {"ot_prune_scope": "problem", "ot_cost_shift": "always", "ot_round_plan": True},
    "batch_centres": {"centre_source": "batch"},
    "tiny_tau": {"ot_tau": 0.01, "ot_t_wd": 0.001, "wd_beta": 0.01, "gw_beta": 0.01},
    "no_prune_prelu": {"ot_prune": -1, "ot_gat_activation": "prelu"},
}


def _run(recbole_env, overrides, epochs=3, batches=2):
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, n_layers=3, **overrides)
    torch.manual_seed(0)
    model = LightGCNOT(cfg, tr._dataset)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    it = iter(tr)
    for _ in range(epochs):
        model.train()
        for _ in range(batches):
            inter = next(it)
            opt.zero_grad()
            losses = model.calculate_loss(inter)
            assert len(losses) == len(model.loss_names)
            for name, term in zip(model.loss_names, losses):
                assert torch.isfinite(term).all(), (overrides, name, term)
            sum(losses).backward()
            for pname, p in model.named_parameters():
                assert p.grad is None or torch.isfinite(p.grad).all(), (overrides, pname)
            opt.step()
    return model, losses


@pytest.mark.parametrize("row", sorted(NOTEBOOK_ROWS))
def test_notebook_rows_finite(recbole_env, row):
    model, losses = _run(recbole_env, NOTEBOOK_ROWS[row])
    ot = losses[model.loss_names.index("ot")]
    if not NOTEBOOK_ROWS[row].get("warmup_all"):
        assert ot.item() != 0.0  # the OT term is really there


def test_gat_is_regularised_and_initialised(recbole_env):
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0)
    model = LightGCNOT(cfg, tr._dataset)
    assert model.gat is not None
    inter = next(iter(tr))
    model.calculate_loss(inter)[1].backward()  # the reg term alone
    assert model.gat.lin.weight.grad is not None and model.gat.lin.weight.grad.abs().sum() > 0


def test_every_switch_value_one_at_a_time(recbole_env):
    """The product of the main discrete axes would be thousands of runs; each value of
    every axis is run here once from the default, and a small product of the loss axes."""
    axes = {
        "ot_z1": ["mean", "mean1", 0, -2],
        "ot_z2": ["gat", "next", "last", "simgcl", 1],
        "sample_adj": ["A", "A2", "cluster"],
        "subg1_adj": ["A", "A2", "xx"],
        "ot_distance": ["wd", "gwd", "both"],
        "gw_plan": ["wd", "gw"],
        "ot_loss": ["bce", "infonce"],
        "ot_negatives": ["z1", "z2", "both"],
        "ot_cost": ["exp", "cos"],
        "ot_prune_scope": ["batch", "problem"],
        "ot_cost_shift": ["auto", "always", "never"],
        "ot_round_plan": [False, True],
        "ot_detach_plan": [False, True],
    }
    seen = set()
    for key, values in axes.items():
        for v in values:
            if (key, v) in seen:
                continue
            seen.add((key, v))
            _run(recbole_env, {key: v, "num_clusters": 30}, epochs=2, batches=1)
    for dist, loss, cost in itertools.product(["wd", "gwd"], ["bce", "infonce"], ["exp", "cos"]):
        _run(recbole_env, {"ot_distance": dist, "ot_loss": loss, "ot_cost": cost}, epochs=1, batches=1)

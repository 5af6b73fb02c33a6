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
    # the switches of the rows GSC's defaults cannot make
    "only_wd_3k1_2k2_wobpr": {"ot_distance": "wd", "bpr_weight": 0},
    "only_gwd_0k1_2k2_csxx_wobpr": {"ot_distance": "gwd", "k1": 0, "subg1_adj": "xx", "bpr_weight": 0},
    "wo_init_pam_l3_300batch": {"param_init": "none", "ot_gat_input": 3, "n_user_centres": 0, "n_item_centres": 0,
                                "n_node_centres": 300, "ot_groups": "joint", "k1": 14, "k2": 0},
    "wo_init_pam_150150b_5k1_10k2": {"param_init": "none", "ot_gat_input": 3, "n_user_centres": 150,
                                     "n_item_centres": 150, "ot_groups": "joint", "k1": 5, "k2": 10},
    "nc_f_no_norm": {"ot_normalize": False, "ot_cost_shift": "always", "ot_loss": "infonce"},
    "no_norm_auto_wo_init": {"ot_normalize": False, "param_init": "none"},  # N(0, 1) rows: large inner products
    "nc_f_normxy_1-cd": {"ot_cost": "cos", "ot_loss": "infonce"},
    "wd_f_nc": {"ot_distance": "wd", "ot_loss": "infonce", "ot_normalize": False, "ot_cost_shift": "always"},
    "z1:01_z2:0123": {"ot_z1": [0, 1], "ot_z2": [0, 1, 2, 3], "sample_adj": "A2", "subg1_adj": "A2", "k1": 0, "k2": 6},
    "z1:gat1_z2:gat3": {"ot_z1": "gat", "ot_z1_gat_input": 1, "ot_z2": "gat", "ot_gat_input": 3},
    "z1:-2_z2:gat4": {"ot_z1": -2, "ot_z2": "gat", "ot_gat_input": "next"},
    "z1_sm03_z2_simgcl_no_layer0": {"ot_z2": "simgcl", "ot_simgcl_input": "mean1"},
    "A2_A2_noguiyi_0k1_9k2": {"sample_adj": "A2", "subg1_adj": "A2", "a2_weights": "counts", "k1": 0, "k2": 9},
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
        "param_init": ["xavier", "none"],
        "bpr_weight": [1.0, 0.0],
        "ot_normalize": [True, False],
        "ot_z1_gat_input": ["mean", 2],
        "ot_simgcl_input": ["z1", "mean1", [1, 2]],
        "n_node_centres": [0, 7],
        "ot_groups": ["ui", "joint"],
        "a2_weights": ["set", "counts"],
    }
    seen = set()
    for key, values in axes.items():
        for v in values:
            if (key, str(v)) in seen:
                continue
            seen.add((key, str(v)))
            extra = {"ot_z1": "gat", "ot_gat_input": 3} if key == "ot_z1_gat_input" else {"ot_z2": "simgcl"} if key == "ot_simgcl_input" else {}
            extra.update({"subg1_adj": "A2"} if key == "a2_weights" else {})
            _run(recbole_env, {key: v, "num_clusters": 30, **extra}, epochs=2, batches=1)
    for dist, loss, cost in itertools.product(["wd", "gwd"], ["bce", "infonce"], ["exp", "cos"]):
        _run(recbole_env, {"ot_distance": dist, "ot_loss": loss, "ot_cost": cost}, epochs=1, batches=1)

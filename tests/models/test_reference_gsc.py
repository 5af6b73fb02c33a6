"""LightGCNOT's OT pieces, with the model's defaults, against GSC's own numbers.

``fixtures/gsc/gsc.npz`` holds what GSC's ``model.py`` (github.com/yh-han/GSC, commit in
``fixtures/gsc/README.md``) computes in ``Model.sub_loss_batch`` on seeded float64 inputs:
the costs, the W plan and distances, the structure and target costs, the GW plan, its
linearisation and distances, both BCE losses and the gradient of the loss. Every piece here
is called as :class:`models.LightGCNOT` calls it, with ``_DEFAULTS`` for its settings, and
every entry must agree in float64: ``|ours - GSC's| <= RTOL * |GSC's| + ATOL`` with RTOL 1e-8
and ATOL 1e-12. Measured (torch 2.13, CPU): the largest difference of any entry is 1.1e-10
(a cost of 57.7, 2e-12 of it); at RTOL every entry agrees without ATOL except gradient
entries near zero, which need 1.5e-14.

Case ``b6k9`` (tau 0.2) is one where GSC's own arithmetic breaks down: its IPOT computes
``exp(-C/beta)`` directly, which is 0 in whole rows of some GW problems, and divides by it
(NaN). Ours runs on logs: finite everywhere, and equal to GSC's wherever GSC's is finite.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import lightgcn_ot as M
from models.ot import solvers as O

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "gsc" / "gsc.npz")
META = json.loads(str(FIXTURE["meta"]))
CASES = sorted(META)
FINITE_CASES = [c for c in CASES if np.isfinite(FIXTURE[f"{c}/loss"])]
D = M._DEFAULTS
RTOL = 1e-8
ATOL = 1e-12


def fx(case: str, key: str) -> torch.Tensor:
    return torch.from_numpy(FIXTURE[f"{case}/{key}"])


def assert_gsc(got: torch.Tensor, case: str, key: str) -> None:
    """``got`` equals GSC's ``key`` entry by entry, ``|got - want| <= RTOL * |want| + ATOL``,
    wherever GSC's is finite; ours must be finite everywhere."""
    want = fx(case, key)
    got = got.detach().reshape(want.shape)
    assert got.dtype == torch.float64
    assert torch.isfinite(got).all()
    ok = torch.isfinite(want)
    assert ok.any()
    excess = (got[ok] - want[ok]).abs() - (RTOL * want[ok].abs() + ATOL)
    worst = int(excess.argmax())
    assert excess[worst] <= 0, (f"{case}/{key}: ours {got[ok][worst].item()!r} vs GSC's {want[ok][worst].item()!r} "
                                f"(tolerance {RTOL} relative + {ATOL} absolute)")


def inputs(case: str):
    """The subgraphs' two views ``[B, k, d]``, the negatives' index, the subgraph adjacency,
    and the scope the model gives one group of subgraphs (here: GSC's one batch)."""
    z, z_g, sub = fx(case, "z"), fx(case, "z_g"), fx(case, "sub")
    adj = fx(case, "adj")[sub[:, :, None], sub[:, None, :]]
    b = sub.shape[0]
    scope = M.subgraph_scope(torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.bool))
    return z, z_g, sub, fx(case, "num"), adj, scope


def stacked(t: torch.Tensor) -> torch.Tensor:
    """Our ``[P, B, ...]`` pairs in GSC's order ``[P * B, ...]`` (positives, z[num], z_g[num])."""
    return t.reshape(-1, *t.shape[2:])


def model_costs(case: str, z=None, z_g=None):
    """``(C [P, B, k, k], C_t [P, B, k, k], C_s [B, k, k])`` as ``LightGCNOT.ot_term`` and
    ``LightGCNOT._structure`` make them with the defaults."""
    z0, zg0, sub, num, adj, scope = inputs(case)
    z = z0 if z is None else z
    z_g = zg0 if z_g is None else z_g
    tau = META[case]["tau"]
    assert D["ot_prune_scope"] == "batch"
    costs = M.pair_costs(z[sub], z_g[sub], num, D["ot_negatives"], True, False, D["ot_cost"], tau, D["ot_prune"],
                         D["ot_cost_shift"], scope)
    p = costs.shape[0] // 2
    cs = M.structure_cost(adj, D["ot_cost"], tau, D["ot_prune"], scope)
    return costs[:p], costs[p:], cs


@pytest.mark.parametrize("case", CASES)
def test_exp_cost_before_pruning_is_gscs_cost_matrix_batch(case):
    z, z_g, sub, num, _, _ = inputs(case)
    x, y = z[sub], z_g[sub]
    y = torch.cat([y, x[num], y[num]])  # GSC's input2
    x = x.repeat(3, 1, 1)
    assert_gsc(O.cost_matrix(x, y, D["ot_cost"], META[case]["tau"], D["ot_cost_shift"]), case, "cost_exp")


@pytest.mark.parametrize("case", CASES)
def test_pruned_costs_are_gscs(case):
    """Batch-wide threshold: ``wd``'s ``cos_distance.min()``, ``cos_batch``, ``GW_distance``."""
    c, ct, cs = model_costs(case)
    assert_gsc(stacked(c), case, "cost_w")
    assert_gsc(stacked(ct), case, "ct")
    assert_gsc(cs.repeat(3, 1, 1), case, "cs")


@pytest.mark.parametrize("case", CASES)
def test_w_plan_and_distance_are_gscs_ot_distance_batch(case):
    c = fx(case, "cost_w")
    assert META[case]["ot_batch_calls"][0] == {"beta": D["wd_beta"], "iteration": D["wd_iters"]}
    t = O.ipot(c, D["wd_beta"], D["wd_iters"])
    assert_gsc(t, case, "plan_w")
    d, t2 = O.wasserstein(c, D["wd_beta"], D["wd_iters"], detach_plan=D["ot_detach_plan"])
    assert_gsc(d, case, "wd")
    assert torch.equal(t, t2)
    plans = O.ot_plans(c, fx(case, "cs"), fx(case, "ct"), D["wd_beta"], D["wd_iters"], D["gw_beta"], D["gw_outer"],
                       D["gw_inner"], round_plan=D["ot_round_plan"])  # the detached path, CUDA-graphed on a GPU
    assert_gsc(plans[0], case, "plan_w")
    assert_gsc(plans[1], case, "gamma")


@pytest.mark.parametrize("case", CASES)
def test_gw_plan_linearisation_and_distance_are_gscs(case):
    cs, ct = fx(case, "cs"), fx(case, "ct")
    inner = META[case]["ot_batch_calls"][1:]
    assert inner == [{"beta": D["gw_beta"], "iteration": D["gw_inner"]}] * D["gw_outer"]
    gamma = O.gw_plan(cs, ct, D["gw_beta"], D["gw_outer"], D["gw_inner"], round=D["ot_round_plan"])
    assert_gsc(gamma, case, "gamma")
    assert_gsc(O.gw_tensor(cs, ct, gamma), case, "cgamma")
    assert D["gw_plan"] == "wd"  # GSC evaluates the GW linearisation with the W plan
    d, _ = O.gromov_wasserstein(cs, ct, D["gw_beta"], D["gw_outer"], D["gw_inner"], plan=fx(case, "plan_w"))
    assert_gsc(d, case, "gwd")


@pytest.mark.parametrize("case", FINITE_CASES)
def test_losses_are_gscs_bce(case):
    """Labels ``[1] * B + [0] * 2B``, mean over the 3B pairs, ``a = 0.5``: one group's
    coefficients as ``LightGCNOT._draw`` makes them, ``mix / (B * P)``."""
    c, ct, cs = model_costs(case)
    p, b = c.shape[:2]
    t_wd = O.ipot(c, D["wd_beta"], D["wd_iters"])
    gamma = O.gw_plan(cs, ct, D["gw_beta"], D["gw_outer"], D["gw_inner"], detach=D["ot_detach_plan"])
    for distance, key, mixes in (("wd", "loss_w", (1.0,)), ("gwd", "loss_gw", (1.0,)),
                                 ("both", "loss", (D["ot_mix"], 1 - D["ot_mix"]))):
        coef = torch.tensor(mixes, dtype=torch.float64)[:, None].expand(-1, b) / (b * p)
        loss = M.pair_loss(c, ct, cs, t_wd, gamma, coef, distance, D["gw_plan"], D["ot_t_wd"], D["ot_t_gwd"],
                           D["ot_loss"])
        assert_gsc(loss, case, key)
    # GSC's W term at its temperature barely moves off log 2: every logit exp(-d/0.01) is < 0.01
    assert fx(case, "logits_w").max() < 0.01 and abs(fx(case, "loss_w").item() - math.log(2)) < 1e-3


@pytest.mark.parametrize("case", FINITE_CASES)
def test_temperatures_and_mix_are_the_ones_gsc_uses(case):
    """Read GSC's literals back from its numbers: ``logits = exp(-d / t)``, ``loss = a loss_w
    + (1 - a) loss_gw``, and the pruning ``relu(C - (min + beta (max - min)))``."""
    for d, logits, t in (("wd", "logits_w", D["ot_t_wd"]), ("gwd", "logits_gw", D["ot_t_gwd"])):
        lg = fx(case, logits)
        ok = lg > 1e-300
        np.testing.assert_allclose(-fx(case, d)[ok] / torch.log(lg[ok]), t, rtol=1e-9)
    lw, lgw, loss = (fx(case, k).item() for k in ("loss_w", "loss_gw", "loss"))
    assert abs((loss - lgw) / (lw - lgw) - D["ot_mix"]) < 1e-6
    raw, pruned = fx(case, "cost_exp"), fx(case, "cost_w")
    thr = (raw - pruned)[pruned > 0]
    assert thr.max() - thr.min() < 1e-12  # one threshold for the whole batch
    beta = (thr[0] - raw.min()) / (raw.max() - raw.min())
    assert abs(beta.item() - D["ot_prune"]) < 1e-9


@pytest.mark.parametrize("case", FINITE_CASES)
def test_gradient_is_gscs(case):
    """GSC differentiates through every IPOT iteration (W and GW); so does the default
    (``ot_detach_plan: False``). ``ot_detach_plan: True`` keeps the loss but not the
    gradient: measured here, it is far off GSC's."""
    errs = {}
    for detach in (False, True):
        z = fx(case, "z").clone().requires_grad_()
        z_g = fx(case, "z_g").clone().requires_grad_()
        c, ct, cs = model_costs(case, z, z_g)
        p, b = c.shape[:2]
        if detach:
            t_wd, gamma = O.ot_plans(c.detach(), cs, ct.detach(), D["wd_beta"], D["wd_iters"], D["gw_beta"],
                                     D["gw_outer"], D["gw_inner"])
            t_wd, gamma = t_wd.view_as(c), gamma.view_as(c)
        else:
            assert D["ot_detach_plan"] is False
            t_wd = O.ipot(c, D["wd_beta"], D["wd_iters"])
            gamma = O.gw_plan(cs, ct, D["gw_beta"], D["gw_outer"], D["gw_inner"], detach=False)
        coef = torch.tensor([D["ot_mix"], 1 - D["ot_mix"]], dtype=torch.float64)[:, None].expand(-1, b) / (b * p)
        loss = M.pair_loss(c, ct, cs, t_wd, gamma, coef, "both", D["gw_plan"], D["ot_t_wd"], D["ot_t_gwd"], "bce")
        assert_gsc(loss, case, "loss")
        g_z, g_zg = torch.autograd.grad(loss, [z, z_g])
        if not detach:
            assert_gsc(g_z, case, "grad_z")
            assert_gsc(g_zg, case, "grad_z_g")
        else:
            errs = {k: ((g - fx(case, k)).abs().max() / fx(case, k).abs().max()).item()
                    for k, g in (("grad_z", g_z), ("grad_z_g", g_zg))}
    assert min(errs.values()) > 0.1, errs


def test_gscs_own_arithmetic_breaks_down_where_ours_does_not():
    """At tau 0.2 GSC's GW plan is NaN in some problems (``exp(-C/0.1)`` is 0 in a whole
    row, then ``1 / (n Q sigma)``); ours is finite there and GSC's wherever GSC's is finite
    (the tests above, case ``b6k9``)."""
    case = "b6k9"
    assert not np.isfinite(FIXTURE[f"{case}/loss"])
    assert torch.isnan(fx(case, "gamma")).any() and torch.isfinite(fx(case, "gamma")).any()
    assert torch.isnan(fx(case, "gwd")).sum() == 2
    c, ct, cs = model_costs(case)
    gamma = O.gw_plan(cs, ct, D["gw_beta"], D["gw_outer"], D["gw_inner"])
    assert torch.isfinite(gamma).all()
    torch.testing.assert_close(gamma.sum(-2), torch.full(gamma.shape[:-2] + gamma.shape[-1:], 1 / gamma.shape[-1],
                                                         dtype=gamma.dtype))


def test_defaults_are_gscs_and_the_safer_choices_are_switches():
    assert (D["ot_prune_scope"], D["ot_cost_shift"], D["ot_round_plan"], D["ot_detach_plan"]) == ("batch", "auto",
                                                                                                  False, False)
    assert M._CHOICES["ot_prune_scope"] == {"batch", "problem"}
    assert M._CHOICES["ot_cost_shift"] == {"auto", "always", "never"}
    # auto: no shift at GSC's tau; at tau 0.01 exp(1/tau) = e^100 would be inf in float32
    cos = torch.tensor([[[-1.0, 1.0], [0.3, -0.2]]])
    assert torch.equal(O.cost_from_cosine(cos, "exp", 0.5, "auto"), O.cost_from_cosine(cos, "exp", 0.5, "never"))
    assert torch.isinf(O.cost_from_cosine(cos, "exp", 0.01, "never")).any()
    shifted = O.cost_from_cosine(cos, "exp", 0.01, "auto")
    assert torch.isfinite(shifted).all()
    assert math.isclose(shifted.max().log().item(), math.log(torch.finfo(torch.float32).max) / 4, rel_tol=1e-5)
    # within one scope the shift is one factor: the ratios are GSC's
    ratio = shifted / O.cost_from_cosine(cos.double(), "exp", 0.01, "never")
    assert torch.allclose(ratio[ratio > 0], ratio[ratio > 0][0], rtol=1e-5)

"""The Triton OT plans (``models/ot/triton_plans.py``) equal the PyTorch solvers they replace.

There is no GPU here, so the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``),
which executes the same kernel code with numpy; on a GPU, LightGCNOT compares the two
again on its first batch and falls back to PyTorch on a difference (tested below too).
"""

from __future__ import annotations

import pytest
import torch

from models import LightGCNOT
from models.ot import triton_plans
from models.ot import solvers as O

pytest.importorskip("triton")


def test_the_kernels_run_interpreted_here():
    assert triton_plans.interpreted()  # set by conftest.py before Triton's first import


SHAPES = [(3, 6, 6), (4, 5, 7), (2, 31, 31), (2, 1, 3), (1, 17, 9)]


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("p,n,m", SHAPES)
def test_ipot_kernel_equals_the_log_domain_solver(p, n, m, rounded):
    """Both ``ot_round_plan`` settings: GSC's unrounded plan (exact columns) and the rounded one."""
    g = torch.Generator().manual_seed(n * 100 + m)
    c = torch.rand(p, n, m, generator=g) * 7.0  # GSC's exp cost spans e^-2..e^2
    assert triton_plans.supported(c)
    got = triton_plans.ipot(c, beta=0.5, n_iter=40, round=rounded)
    ref = O.ipot(c.double(), beta=0.5, n_iter=40, round=rounded)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sum(-2), torch.full((p, m), 1 / m), rtol=0, atol=1e-5)
    if rounded:
        torch.testing.assert_close(got.sum(-1), torch.full((p, n), 1 / n), rtol=0, atol=1e-5)


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("p,n,m", SHAPES)
def test_gw_kernel_equals_the_gw_solver_with_broadcast_structure(p, n, m, rounded):
    g = torch.Generator().manual_seed(n * 100 + m + 1)
    cs = torch.rand(n, n, generator=g)  # one structure cost for every pair, as LightGCNOT passes it
    ct = torch.rand(p, m, m, generator=g) * 3.0
    got = triton_plans.gw_plan(cs, ct, beta=0.1, n_outer=5, n_inner=20, round=rounded)
    ref = O.gw_plan(cs.double(), ct.double(), 0.1, 5, 20, round=rounded)
    assert got.shape == (p, n, m)
    # as close to float64 as PyTorch's own float32 solver is (both a few 1e-6 here)
    err32 = (O.gw_plan(cs, ct, 0.1, 5, 20, round=rounded).double() - ref).abs().max().item()
    assert (got.double() - ref).abs().max().item() <= max(4 * err32, 1e-5)
    torch.testing.assert_close(got.sum(-2), torch.full((p, m), 1 / m), rtol=0, atol=1e-5)
    if rounded:
        torch.testing.assert_close(got.sum(-1), torch.full((p, n), 1 / n), rtol=0, atol=1e-5)


def test_kernels_stay_finite_where_a_plain_exp_kernel_underflows():
    g = torch.Generator().manual_seed(5)
    c = torch.rand(4, 6, 6, generator=g) * 500.0  # exp(-c / 0.1) is 0 in float32 everywhere
    t = triton_plans.ipot(c, beta=0.1, n_iter=40)
    assert torch.isfinite(t).all()
    ref = O.ipot(c.double(), 0.1, 40)  # unrounded (GSC): no rounding squashes float32's error, so judged as the GW plan
    err32 = (O.ipot(c, 0.1, 40).double() - ref).abs().max().item()
    assert (t.double() - ref).abs().max().item() <= max(4 * err32, 1e-6)
    cs, ct = torch.rand(6, 6, generator=g) * 30, torch.rand(4, 6, 6, generator=g) * 30
    gamma = triton_plans.gw_plan(cs, ct, 0.1, 5, 20)
    assert torch.isfinite(gamma).all()
    torch.testing.assert_close(gamma.sum(-2), torch.full((4, 6), 1 / 6), rtol=0, atol=1e-5)


def test_what_the_kernels_do_not_take_goes_to_pytorch():
    assert not triton_plans.supported(torch.rand(2, 6, 6, dtype=torch.float64))
    assert not triton_plans.supported(torch.rand(2, 65, 65))
    assert triton_plans.supported(torch.rand(2, 64, 64))
    c = torch.rand(2, 65, 65)
    t, _ = O.ot_plans(c, None, None, triton=True)  # falls through to PyTorch, same numbers
    torch.testing.assert_close(t, O.ipot(c, 0.5, 40))


def _term(recbole_env, solver, corrupt=None, monkeypatch=None):
    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_weight=1.0, embedding_size=16, ot_solver=solver,
                                ot_detach_plan=True,  # the kernels compute detached plans only
                                n_user_centres=2, n_item_centres=2)  # 12 problems: the interpreter is slow
    inter = next(iter(tr))
    torch.manual_seed(0)
    model = LightGCNOT(cfg, tr._dataset)
    model.train()
    if corrupt is not None:
        monkeypatch.setattr(triton_plans, "ipot", corrupt)
    torch.manual_seed(1)  # the same draw
    layers = model.propagate()
    loss = model.ot_term(layers, inter, model.readout(layers))
    return model, loss, torch.autograd.grad(loss, [model.user_embedding.weight])[0]


def test_lightgcnot_with_triton_plans_gives_pytorchs_loss_and_gradients(recbole_env):
    _, eager, g_eager = _term(recbole_env, "torch")
    model, tri, g_tri = _term(recbole_env, "triton")
    assert model._plans.fn.keywords["triton"] is True  # the first-batch check passed: kept
    assert eager.item() != 0.0
    torch.testing.assert_close(tri, eager, rtol=1e-5, atol=1e-7)
    # the GW plan is sensitive to float32 rounding (PyTorch's is ~1e-4 off float64): 1e-3 of the largest entry
    torch.testing.assert_close(g_tri, g_eager, rtol=1e-3, atol=1e-3 * g_eager.abs().max().item())


def test_auto_keeps_pytorch_on_the_cpu(recbole_env):
    model, _, _ = _term(recbole_env, "auto")
    assert model._plans.fn.keywords["triton"] is False  # no interpreter in real runs


def test_auto_falls_back_to_pytorch_when_the_kernels_disagree(recbole_env, monkeypatch):
    from models import lightgcn_ot

    _, eager, _ = _term(recbole_env, "torch")
    monkeypatch.setattr(lightgcn_ot, "_on_gpu", lambda t: True)  # as on a GPU: auto tries the kernels
    with pytest.warns(UserWarning, match="Triton OT plans not used .*differ from float64"):
        model, loss, _ = _term(recbole_env, "auto", corrupt=lambda c, **k: torch.rand_like(c), monkeypatch=monkeypatch)
    assert model._plans.fn.keywords["triton"] is False
    torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-7)  # the run goes on with PyTorch's plans


def test_triton_setting_refuses_kernels_that_disagree(recbole_env, monkeypatch):
    with pytest.raises(RuntimeError, match="ot_solver=triton: W plans differ from float64"):
        _term(recbole_env, "triton", corrupt=lambda c, **k: torch.rand_like(c), monkeypatch=monkeypatch)

"""The OT math against POT on random inputs, in float64, entry by entry
(``|ours - POT's| <= rtol * |POT's| + atol``, numpy's ``assert_allclose``).

Measured (torch 2.13, POT 0.9.7, CPU): the Sinkhorn plans differ by at most 1.3e-14
(2.9e-13 relative), the GW tensors and losses by 2.2e-16, and IPOT after 2000 iterations
reaches ``emd2``'s distance and ``emd``'s plan to 5.6e-17. The tolerances below leave a
margin of 100 times or more.
"""

import numpy as np
import ot
import pytest
import torch

from models.ot import solvers


def _rand_cost(b, n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, m, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,m", [(5, 5), (4, 7)])
def test_ipot_one_outer_many_inner_is_sinkhorn(n, m):
    c = _rand_cost(3, n, m)
    beta = 0.5
    t = solvers.ipot(c, beta=beta, n_iter=1, n_inner=2000)
    for i in range(3):
        ref = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), c[i].numpy(), reg=beta, numItermax=10000, stopThr=1e-13)
        np.testing.assert_allclose(t[i].numpy(), ref, rtol=1e-10, atol=1e-15)


def test_ipot_many_steps_reaches_emd2_and_its_plan():
    """IPOT is a proximal point method: its plan converges to the exact transport plan,
    not to an entropic one (at 200 iterations it is 3e-10 off, at 2000 at rounding)."""
    n = m = 6
    c = _rand_cost(4, n, m, seed=1)
    d, t = solvers.wasserstein(c, beta=0.05, n_iter=2000)
    for i in range(4):
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        np.testing.assert_allclose(d[i].item(), ot.emd2(a, b, c[i].numpy()), rtol=1e-12, atol=0)
        np.testing.assert_allclose(t[i].numpy(), ot.emd(a, b, c[i].numpy()), rtol=0, atol=1e-14)


@pytest.mark.parametrize("n_iter,n_inner,beta", [(1, 1, 0.5), (40, 1, 0.5), (3, 5, 0.1), (40, 1, 0.01)])
def test_rounded_plans_have_uniform_marginals_and_unrounded_ones_their_columns(n_iter, n_inner, beta):
    """The last IPOT update fixes the columns; ``round=True`` (``ot_round_plan``) the rows too.
    GSC does not round: on this wide cost range its rows stay 0.08-0.19 off ``1/6``."""
    c = _rand_cost(5, 6, 4, seed=2).float() * 10  # float32 and a wide cost range
    rows, cols = torch.full((5, 6), 1 / 6), torch.full((5, 4), 1 / 4)
    for rounded in (True, False):
        t = solvers.ipot(c, beta=beta, n_iter=n_iter, n_inner=n_inner, round=rounded)
        assert torch.isfinite(t).all() and (t >= 0).all()
        torch.testing.assert_close(t.sum(1), cols, atol=1e-5, rtol=0)
        if rounded:
            torch.testing.assert_close(t.sum(2), rows, atol=1e-5, rtol=0)
    assert (t.sum(2) - rows).abs().max().item() > 0.05


def test_gw_tensor_and_loss_match_pot():
    b, n, m = 3, 5, 6
    g = torch.Generator().manual_seed(3)
    x = torch.rand(b, n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(b, m, 3, generator=g, dtype=torch.float64)
    cs = torch.cdist(x, x)
    ct = torch.cdist(y, y)
    gamma = solvers.ipot(_rand_cost(b, n, m, seed=4), beta=0.3, n_iter=10)
    lin = solvers.gw_tensor(cs, ct, gamma)
    for i in range(b):
        p, q = np.full(n, 1 / n), np.full(m, 1 / m)
        const_c, h1, h2 = ot.gromov.init_matrix(cs[i].numpy(), ct[i].numpy(), p, q, "square_loss")
        ref = ot.gromov.tensor_product(const_c, h1, h2, gamma[i].numpy())
        np.testing.assert_allclose(lin[i].numpy(), ref, rtol=1e-12, atol=1e-15)
        loss = ot.gromov.gwloss(const_c, h1, h2, gamma[i].numpy())
        np.testing.assert_allclose(solvers.batch_trace_dot(lin, gamma)[i].item(), loss, rtol=1e-12, atol=1e-15)


def test_gromov_wasserstein_plan_is_feasible_and_distance_nonnegative():
    b, n = 4, 6
    g = torch.Generator().manual_seed(5)
    x = torch.rand(b, n, 4, generator=g, dtype=torch.float64)
    cs = solvers.prune_cost(solvers.cost_matrix(x, x))
    ct = solvers.prune_cost(solvers.cost_matrix(x + 0.01, x + 0.01))
    d, gamma = solvers.gromov_wasserstein(cs, ct, round=True)
    torch.testing.assert_close(gamma.sum(2), torch.full((b, n), 1 / n, dtype=gamma.dtype), atol=1e-5, rtol=0)
    assert (d > -1e-9).all()
    # the same space twice: the GW discrepancy is no larger than for a shuffled target
    perm = torch.randperm(b, generator=g)
    d_shuf, _ = solvers.gromov_wasserstein(cs, ct[perm])
    assert d.mean() <= d_shuf.mean() + 1e-9


def test_cost_is_finite_at_tiny_tau_and_zero_vectors():
    x = torch.zeros(2, 4, 8, dtype=torch.float32, requires_grad=True)
    y = torch.randn(2, 4, 8, dtype=torch.float32, requires_grad=True)
    for form in ("exp", "cos"):
        c = solvers.prune_cost(solvers.cost_matrix(x, y, form=form, tau=0.01))
        d, _ = solvers.wasserstein(c, n_iter=40)
        d.sum().backward()
        assert torch.isfinite(c).all() and torch.isfinite(d).all()
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()

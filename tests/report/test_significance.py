"""Per-user significance (ablate/report/significance.py) against its references on the
same vectors: scipy's ttest_rel, wilcoxon, permutation_test and bootstrap, statsmodels'
multipletests, and ranx's compare on per-user vectors of real ml-100k runs
(fixtures/peruser_ml100k.npz, made by fixtures/make_peruser_ml100k.py).

Where a test is Monte Carlo, the bound is stated where it is asserted; the draws are
seeded, so these tests give the same answer on every run.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as sps

from ablate.report import significance as sg

FIXTURE = Path(__file__).parent / "fixtures" / "peruser_ml100k.npz"
COLUMNS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


@pytest.fixture(scope="module")
def ml100k():
    return np.load(FIXTURE)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def scipy_randomization(d, n_resamples=9999, seed=None):
    return sps.permutation_test((d,), _mean, permutation_type="samples", vectorized=True, alternative="two-sided",
                                n_resamples=n_resamples, rng=None if seed is None else np.random.default_rng(seed)).pvalue


def scipy_wilcoxon(d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sps.wilcoxon(d).pvalue


# Vectors that hit every branch the tests take: continuous, zero-heavy per-user recall
# differences, rounded values with ties, constant, tiny and huge n.
def _vectors(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in (2, 3, 5, 8, 13, 14, 20, 49, 50, 51, 80, 400):
        out.append(rng.normal(0.01, 0.1, n))  # no ties, no zeros
        out.append(np.round(rng.normal(0.0, 0.1, n), 1))  # ties and zeros
        a, b = rng.binomial(5, 0.2, n) / 5, rng.binomial(5, 0.25, n) / rng.integers(5, 9, n)
        out.append(a - b)  # recall-like: many exact zeros
    out.append(np.full(6, 0.1))  # constant, not zero: variance 0
    return [d for d in out if (d != 0).any()]


VECTORS = _vectors()


# --------------------------------------------------------------------------- t-test

@pytest.mark.parametrize("i", range(len(VECTORS)))
def test_t_pvalue_equals_ttest_rel(i):
    d = VECTORS[i]
    a = np.linspace(0.2, 0.7, len(d))
    want = sps.ttest_rel(a + d, a).pvalue  # ttest_rel(row, base): the table's direction
    got = sg.t_pvalues(d)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (got, want)
    assert sg.t_pvalues((a + d) - a) == pytest.approx(sps.ttest_1samp(d, 0).pvalue, rel=1e-9, abs=1e-15)


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 60), elements=st.sampled_from([-0.5, -0.25, -0.1, 0.0, 0.0, 0.05, 0.1, 1 / 3, 0.5])))
def test_t_pvalue_equals_ttest_1samp_on_tied_zero_heavy_vectors(d):
    got = sg.t_pvalues(d)
    if not (d != 0).any():
        assert math.isnan(got)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sps.ttest_1samp(d, 0).pvalue
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_t_cells_with_their_own_users_equal_one_test_each():
    rng = np.random.default_rng(1)
    d = rng.normal(0.005, 0.1, (40, 300))
    d[rng.random(d.shape) < 0.3] = np.nan  # each cell its own users
    d[3] = 0.0  # identical runs: no test
    d[4, 2:] = np.nan  # two users
    d[5, 1:] = np.nan  # one user: no test
    p = sg.t_pvalues(d)
    for row, got in zip(d, p):
        v = row[~np.isnan(row)]
        if len(v) < 2 or not (v != 0).any():
            assert math.isnan(got)
        else:
            assert got == pytest.approx(sps.ttest_1samp(v, 0).pvalue, rel=1e-9)
    assert np.isnan(p[[3, 5]]).all() and not np.isnan(p[4])
    # any leading shape: columns x rows x users
    np.testing.assert_array_equal(sg.t_pvalues(d.reshape(4, 10, 300)), p.reshape(4, 10))


# ------------------------------------------------------------------------- Wilcoxon

@pytest.mark.parametrize("i", range(len(VECTORS)))
def test_wilcoxon_equals_scipy_defaults(i):
    d = VECTORS[i]
    got, want = sg.wilcoxon_pvalues(d), scipy_wilcoxon(d)
    assert got == pytest.approx(want, rel=1e-12, abs=0), (len(d), got, want)


def test_wilcoxon_vectors_take_every_branch_of_scipys_auto():
    kinds = set()
    for d in VECTORS:
        n, zeros_or_ties = len(d), (d == 0).any() or len(np.unique(np.abs(d[d != 0]))) < (d != 0).sum()
        kinds.add("normal" if n > 50 or (zeros_or_ties and n > 13) else "permutation" if zeros_or_ties else "exact")
    assert kinds == {"normal", "permutation", "exact"}


@settings(max_examples=120, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 70), elements=st.sampled_from([-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5, 4.0])))
def test_wilcoxon_equals_scipy_with_ties_and_zeros(d):
    got = sg.wilcoxon_pvalues(d)
    if not (d != 0).any():
        assert math.isnan(got)  # no test (scipy: NaN, or 1 by its permutation branch)
        return
    assert got == pytest.approx(scipy_wilcoxon(d), rel=1e-12, abs=0)


def test_wilcoxon_cells_with_their_own_users_equal_one_test_each():
    rng = np.random.default_rng(2)
    d = np.round(rng.normal(0, 0.2, (30, 120)), 1)
    d[rng.random(d.shape) < 0.5] = np.nan
    d[0, 10:] = np.nan  # ten users, ties or zeros likely: permutation branch
    d[1, :] = np.nan
    d[1, :30] = rng.normal(0, 1, 30)  # 30 distinct: exact branch
    d[2] = 0.0
    p = sg.wilcoxon_pvalues(d)
    for row, got in zip(d, p):
        v = row[~np.isnan(row)]
        if not (v != 0).any():
            assert math.isnan(got)
        else:
            assert got == pytest.approx(scipy_wilcoxon(v), rel=1e-12)


# -------------------------------------------------------------------- randomization

@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 13), elements=st.one_of(
    st.sampled_from([-0.5, -0.2, 0.0, 0.1, 0.2, 0.5]), st.floats(-1, 1, allow_subnormal=False))))
def test_randomization_is_exact_and_equals_permutation_test_up_to_2_to_the_13(d):
    got = sg.randomization_pvalues(d)  # 2**13 = 8192 <= 10,000 resamples: every sign vector
    if not (d != 0).any():
        assert math.isnan(got)
        return
    assert got == scipy_randomization(d)  # exactly
    if len(d) >= 8:  # where numpy's pairwise sum and a sum in order differ
        sequential = np.cumsum(sg._sign_patterns(len(d)) * d, axis=1)[:, -1] / len(d)
        null = sps.permutation_test((d,), _mean, permutation_type="samples", vectorized=True).null_distribution
        np.testing.assert_array_equal(np.sort(sequential), np.sort(null))


def test_randomization_exact_counts_equal_sums_as_scipy_does():
    # 0.1 + 0.1 - 0.5 ... : flips that are equal in exact arithmetic differ in the last bits
    # by summation order, by more than scipy's tolerance when the mean is near 0
    d = np.array([-0.5, 0.046875, 0.0, 0.0, 0.1, 0.7265625, -0.9765625, 0.1, 0.5])
    assert sg.randomization_pvalues(d) == scipy_randomization(d) == 0.984375


def test_randomization_exact_when_resamples_cover_every_sign_vector():
    d = np.random.default_rng(3).normal(0.1, 0.5, 14)
    assert sg.randomization_pvalues(d, n_resamples=2**14) == scipy_randomization(d, n_resamples=2**14)
    # one sign vector fewer: Monte Carlo, p on the grid k / (B + 1) times 2
    p = sg.randomization_pvalues(d, n_resamples=2**14 - 1)
    assert (p * 2**14 / 2) == pytest.approx(round(p * 2**14 / 2), abs=1e-9)


def _mc_bound(p: float, *resamples: int) -> float:
    """Four standard errors of the difference of independent Monte Carlo estimates of a
    two-sided p (each 2 min(count)/B: variance p (2 - p) / B), plus their +1 terms."""
    var = sum(p * (2 - p) / b for b in resamples)
    return 4 * math.sqrt(var) + sum(2 / (b + 1) for b in resamples)


def test_randomization_monte_carlo_agrees_with_scipy_within_its_sampling_error(ml100k):
    rng = np.random.default_rng(4)
    cases = [rng.normal(mu, 1.0, 400) for mu in (0.0, 0.05, 0.1, 0.13, 0.2)]
    base = ml100k["values_base_2020"]
    cases += [ml100k["values_near_2020"][:, j] - base[:, j] for j in (1, 2, 3)]  # real: few users differ
    d = np.full((len(cases), 943), np.nan)
    for i, c in enumerate(cases):
        d[i, : len(c)] = c
    ours = sg.randomization_pvalues(d, n_resamples=10_000, seed=0)
    checked = 0
    for c, p in zip(cases, ours):
        want = scipy_randomization(c, n_resamples=9_999, seed=1)
        bound = _mc_bound((p + want) / 2, 10_000, 9_999)  # 0.029 at p = 0.5, 0.013 at p = 0.05
        assert abs(p - want) <= bound, (p, want, bound)
        checked += 0.005 < want < 0.995
    assert checked >= 5
    # seeded: the same answer twice, another seed moves it within the same error
    np.testing.assert_array_equal(sg.randomization_pvalues(d, seed=0), ours)
    other = sg.randomization_pvalues(d, seed=1)
    assert not np.array_equal(other, ours)
    assert all(abs(a - b) <= _mc_bound((a + b) / 2, 10_000, 10_000) for a, b in zip(ours, other))


def test_randomization_p_is_never_zero_and_identical_runs_are_not_tested(ml100k):
    d = (ml100k["values_weak_2020"] - ml100k["values_base_2020"]).T
    p = sg.randomization_pvalues(np.vstack([d, np.zeros(943)]))
    np.testing.assert_array_equal(p[:4], 2 / 10_001)  # no flip reached the observed mean: 2 (0 + 1) / (B + 1)
    assert math.isnan(p[4])


# ---------------------------------------------------------------------- corrections

@settings(max_examples=100, deadline=None)
@given(p=hnp.arrays(np.float64, st.integers(0, 40), elements=st.one_of(
    st.floats(0, 1), st.sampled_from([0.0, 0.001, 0.01, 0.0125, 0.025, 0.05, 1.0, np.nan]))),
    alpha=st.sampled_from([0.01, 0.05, 0.1]), method=st.sampled_from(["holm", "bonferroni"]))
def test_corrections_equal_statsmodels_multipletests(p, alpha, method):
    from statsmodels.stats.multitest import multipletests

    c = sg.correct(p, method, alpha)
    tested = ~np.isnan(p)
    assert c.family == tested.sum()
    assert np.isnan(c.p_adjusted[~tested]).all() and not c.reject[~tested].any()
    if tested.any():
        reject, adjusted, _, _ = multipletests(p[tested], alpha=alpha, method=method)
        np.testing.assert_array_equal(c.p_adjusted[tested], adjusted)
        np.testing.assert_array_equal(c.reject[tested], reject)


def test_correction_family_is_every_tested_cell_whatever_the_shape():
    from statsmodels.stats.multitest import multipletests

    p = np.array([[0.001, 0.02, np.nan], [0.04, 0.0001, 0.3]])
    c = sg.correct(p, "holm", 0.05)
    reject, adjusted, _, _ = multipletests(p[~np.isnan(p)], alpha=0.05, method="holm")
    assert c.family == 5 and c.p_adjusted.shape == (2, 3)
    np.testing.assert_array_equal(c.p_adjusted[~np.isnan(p)], adjusted)
    np.testing.assert_array_equal(c.reject[~np.isnan(p)], reject)
    assert c.reject.tolist() == [[True, False, False], [False, True, False]]
    none = sg.correct(p, "none", 0.05)
    assert none.reject.tolist() == [[True, True, False], [True, True, False]]  # p <= alpha, as multipletests decides
    np.testing.assert_array_equal(none.p_adjusted, p)
    with pytest.raises(ValueError, match="unknown correction 'fdr'"):
        sg.correct(p, "fdr")


# ------------------------------------------------------------- real runs, ranx

def _ranx_inputs(z):
    from ranx import Qrels, Run

    users, ptr, items = z["users_2020"], z["pos_indptr_2020"], z["pos_items_2020"]
    qrels = Qrels({str(u): {str(i): 1 for i in items[ptr[j]:ptr[j + 1]]} for j, u in enumerate(users)})
    runs = []
    for name in ("base_2020", "weak_2020", "near_2020"):
        top = z[f"topk_{name}"]  # RecBole's own top-20 per user, best first
        runs.append(Run({str(u): {str(i): float(20 - r) for r, i in enumerate(top[j])} for j, u in enumerate(users)}, name=name))
    return qrels, runs


@pytest.fixture(scope="module")
def ranx_runs(ml100k):
    return _ranx_inputs(ml100k)  # ranx is in the test extra: no skip when it is missing


def test_ranx_per_query_metrics_equal_recboles_per_user_values(ml100k, ranx_runs):
    """The faithful route to ranx: qrels and runs built from RecBole's recommendation
    lists and test items give, query by query, RecBole's own per-user recall and ndcg
    (recall = hits / |positives|; ndcg's ideal DCG over min(|positives|, k) binary gains)."""
    from ranx import evaluate

    qrels, runs = ranx_runs
    at = {u: j for j, u in enumerate(ml100k["users_2020"].tolist())}
    for run in runs:
        scores = evaluate(qrels, run, COLUMNS, return_mean=False)
        order = [at[int(q)] for q in run.keys()]  # ranx orders queries by their id as text
        for j, metric in enumerate(COLUMNS):
            np.testing.assert_array_equal(scores[metric], ml100k[f"values_{run.name}"][order, j])


def _ranx_pairs():
    return [("base_2020", "weak_2020"), ("base_2020", "near_2020"), ("weak_2020", "near_2020")]


def test_t_test_agrees_with_ranx_student_on_real_runs(ml100k, ranx_runs):
    from ranx import compare

    qrels, runs = ranx_runs
    report = compare(qrels, runs, COLUMNS, stat_test="student", max_p=0.05)
    for control, treatment in _ranx_pairs():
        d = (ml100k[f"values_{treatment}"] - ml100k[f"values_{control}"]).T
        ours = sg.t_pvalues(d)
        for j, metric in enumerate(COLUMNS):
            theirs = report.comparisons[control, treatment][metric]
            if math.isnan(theirs["p_value"]):  # near == base on recall@10 for every user
                assert math.isnan(ours[j]) and not theirs["significant"]
                continue
            assert ours[j] == pytest.approx(theirs["p_value"], rel=1e-9, abs=1e-300)
            assert (ours[j] <= 0.05) == theirs["significant"]
    d = (ml100k["values_near_2020"] - ml100k["values_base_2020"]).T
    assert (d[0] == 0).all()


def test_randomization_agrees_with_ranx_fisher_on_real_runs(ml100k, ranx_runs):
    from ranx import compare

    qrels, runs = ranx_runs
    report = compare(qrels, runs, COLUMNS, stat_test="fisher", max_p=0.05, n_permutations=10_000, random_seed=42)
    decided = 0
    for control, treatment in _ranx_pairs():
        d = (ml100k[f"values_{treatment}"] - ml100k[f"values_{control}"]).T
        ours = sg.randomization_pvalues(d, n_resamples=10_000, seed=0)
        for j, metric in enumerate(COLUMNS):
            theirs = report.comparisons[control, treatment][metric]
            if math.isnan(ours[j]):  # identical on every user: ranx says p = 1, not significant
                assert theirs["p_value"] == 1.0 and not theirs["significant"]
                continue
            # ranx estimates p as #{|mean*| >= |mean|} / B (no +1): the same p, its own draws
            assert abs(ours[j] - theirs["p_value"]) <= _mc_bound(ours[j], 10_000, 10_000)
            assert (ours[j] <= 0.05) == theirs["significant"], (control, treatment, metric, ours[j], theirs)
            assert (ours[j] <= 0.01) == (theirs["p_value"] <= 0.01)  # ranx's decision at max_p=0.01
            decided += 1
    assert decided == 11


def test_weak_variant_is_marked_and_an_identical_config_is_not(ml100k):
    base = ml100k["values_base_2020"]
    d = np.stack([(ml100k[f"values_{r}_2020"] - base).T for r in ("weak", "near", "base")])  # rows x columns x users
    for test in sg.TESTS:
        c = sg.compare(d, test=test)
        assert c.reject[0].all(), test  # the barely trained variant, every column
        assert not c.reject[1].any(), test  # reg_weight 1e-3: not distinguishable per user
        assert not c.reject[2].any() and np.isnan(c.p[2]).all(), test  # the baseline against itself: untested
        assert c.family == 7  # weak x 4 + near x 3 (recall@10 is equal for every user)
        assert c.n.tolist() == [[943] * 4] * 3
    c = sg.compare(d)
    np.testing.assert_allclose(c.mean[0], (ml100k["values_weak_2020"] - base).mean(axis=0), rtol=1e-12)


def test_ties_with_the_best_on_real_runs(ml100k):
    values = {r: ml100k[f"values_{r}_2020"] for r in ("base", "weak", "near")}
    names = list(values)
    d = np.empty((len(COLUMNS), len(names), 943))
    for j in range(len(COLUMNS)):
        best = max(names, key=lambda r: values[r][:, j].mean())
        for i, r in enumerate(names):
            d[j, i] = values[r][:, j] - values[best][:, j]
    for test in sg.TESTS:
        ties = sg.ties_with_best(d, test=test)
        assert ties.tied.tolist() == [[True, False, True]] * 4, test  # base and near tie; weak is beaten
    ties = sg.ties_with_best(d)
    assert ties.comparison.family == 4 + 3  # weak x 4, the other of base/near x 3 (recall@10: identical)
    # the same machinery as compare: the same p-values and correction
    c = sg.compare(d)
    np.testing.assert_array_equal(ties.comparison.p_adjusted, c.p_adjusted)
    # a row with no paired users cannot tie
    d2 = d.copy()
    d2[:, 1] = np.nan
    assert not sg.ties_with_best(d2).tied[:, 1].any()


def test_wilcoxon_and_t_on_real_runs_equal_scipy(ml100k):
    base = ml100k["values_base_2020"]
    for r in ("weak_2020", "near_2020"):
        d = (ml100k[f"values_{r}"] - base).T
        np.testing.assert_allclose(sg.wilcoxon_pvalues(d[1:]), [scipy_wilcoxon(x) for x in d[1:]], rtol=1e-12)
        np.testing.assert_allclose(sg.t_pvalues(d[1:]), [sps.ttest_rel(ml100k[f"values_{r}"][:, j], base[:, j]).pvalue
                                                         for j in (1, 2, 3)], rtol=1e-9)


# ----------------------------------------------------------------------- bootstrap

def _ratio(x, y, axis=-1):
    return np.mean(x, axis=axis) / np.mean(y, axis=axis) - 1


def _diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


@pytest.mark.parametrize("relative", [True, False])
def test_bootstrap_equals_scipy_draw_for_draw(ml100k, relative):
    a, b = ml100k["values_near_2020"][:, 3], ml100k["values_base_2020"][:, 3]
    ours = sg.bootstrap_ci(a, b, n_resamples=2_500, seed=11, relative=relative)
    ref = sps.bootstrap((a, b), _ratio if relative else _diff, paired=True, vectorized=True, method="percentile",
                        n_resamples=2_500, batch=sg.BATCH, rng=np.random.default_rng(11))
    assert ours.low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert ours.high == pytest.approx(ref.confidence_interval.high, rel=1e-9)
    assert ours.estimate == pytest.approx(_ratio(a, b) if relative else _diff(a, b), rel=1e-12)


def test_bootstrap_agrees_with_scipy_within_monte_carlo_error(ml100k):
    """Independent draws (scipy's own batch and seed): a 2.5 % quantile estimated from
    B = 10,000 resamples has a standard error of about sqrt(q(1-q)/B) / f(x_q) = 0.027
    sigma for a normal bootstrap distribution of sd sigma; two such estimates differ by
    0.038 sigma on one standard error. Bound: 0.2 sigma (five of them)."""
    for r, j in (("weak", 1), ("near", 3), ("weak", 2)):
        a, b = ml100k[f"values_{r}_2020"][:, j], ml100k["values_base_2020"][:, j]
        ours = sg.bootstrap_ci(a, b, n_resamples=10_000, seed=0)
        ref = sps.bootstrap((a, b), _ratio, paired=True, vectorized=True, method="percentile", n_resamples=10_000,
                            rng=np.random.default_rng(123))
        sigma = ref.standard_error
        assert abs(ours.low - ref.confidence_interval.low) <= 0.2 * sigma
        assert abs(ours.high - ref.confidence_interval.high) <= 0.2 * sigma
        assert ours.low < ours.estimate < ours.high


def test_bootstrap_rows_at_once_equal_each_row_alone():
    rng = np.random.default_rng(5)
    base = rng.binomial(4, 0.3, 500) / 4 + 0.01
    rows = np.clip(base + rng.normal(0.01, 0.1, (6, 500)), 0, 1)
    rows[2, :40] = np.nan  # a row that paired fewer users
    rows[3] = np.nan  # a row with no users
    ci = sg.bootstrap_ci(rows, base, n_resamples=1_500, seed=3)
    for i in range(6):
        one = sg.bootstrap_ci(rows[i], base, n_resamples=1_500, seed=3)
        for field in ("estimate", "low", "high"):
            np.testing.assert_allclose(getattr(ci, field)[i], getattr(one, field), rtol=1e-12, equal_nan=True)
    assert np.isnan([ci.estimate[3], ci.low[3], ci.high[3]]).all()
    # the row with missing users is the bootstrap of its own 460 pairs (scipy, same draws)
    ok = ~np.isnan(rows[2])
    ref = sps.bootstrap((rows[2][ok], base[ok]), _ratio, paired=True, vectorized=True, method="percentile",
                        n_resamples=1_500, batch=sg.BATCH, rng=np.random.default_rng(3))
    assert ci.low[2] == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    # one baseline per row (rows paired over different seeds) gives the same as a shared one
    per_row = sg.bootstrap_ci(rows, np.broadcast_to(base, rows.shape).copy(), n_resamples=1_500, seed=3)
    np.testing.assert_allclose(per_row.low, ci.low, rtol=1e-12, equal_nan=True)
    assert ci.low.shape == (6,) and sg.bootstrap_ci(rows.reshape(2, 3, 500), base, n_resamples=100).low.shape == (2, 3)
    # columns x rows, one baseline per column: each cell as if alone
    base2 = np.clip(base + rng.normal(0, 0.05, 500), 0, 1)
    a2 = np.stack([rows[[0, 1, 4]], rows[[5, 4, 0]]])
    b2 = np.stack([base, base2])[:, None, :]
    ci2 = sg.bootstrap_ci(a2, b2, n_resamples=1_200, seed=8)
    for c in range(2):
        for r in range(3):
            one = sg.bootstrap_ci(a2[c, r], b2[c, 0], n_resamples=1_200, seed=8)
            assert ci2.low[c, r] == pytest.approx(float(one.low), rel=1e-12)
            assert ci2.high[c, r] == pytest.approx(float(one.high), rel=1e-12)


def test_bootstrap_interval_narrows_with_level_and_covers_a_known_shift():
    rng = np.random.default_rng(6)
    b = rng.uniform(0.1, 0.3, 2_000)
    a = b * 1.10 + rng.normal(0, 0.02, 2_000)  # +10 %
    ci95 = sg.bootstrap_ci(a, b, n_resamples=4_000, seed=0)
    ci50 = sg.bootstrap_ci(a, b, n_resamples=4_000, seed=0, level=0.5)
    assert ci95.low < 0.10 < ci95.high and ci95.high - ci95.low < 0.01
    assert ci95.low < ci50.low < ci50.high < ci95.high
    with pytest.raises(ValueError, match="level"):
        sg.bootstrap_ci(a, b, level=95)


# -------------------------------------------------------------------- notes, imports

def test_footnotes_name_test_users_seeds_correction_and_alpha(ml100k):
    base = ml100k["values_base_2020"]
    d = np.stack([(ml100k[f"values_{r}_2020"] - base).T for r in ("weak", "near")])
    assert sg.footnote(sg.compare(d), seeds=[2020]) == "paired t-test over 943 users (seed 2020), Holm over 7 comparisons, α=0.05"
    d[:, :, :3] = np.nan
    d[0, 0, 3] = np.nan
    c = sg.compare(d, "randomization", "bonferroni", 0.01, n_resamples=2_000, seed=5)
    assert sg.footnote(c, seeds=[2021, 2020]) == (
        "paired randomization test (2,000 sign flips, seed 5) over 939–940 users "
        "(seeds 2020, 2021; per-user mean over seeds), Bonferroni over 7 comparisons, α=0.01")
    assert sg.footnote(sg.compare(d[:1, :1], "wilcoxon", "none")) == (
        "Wilcoxon signed-rank test over 939 users, no correction (1 comparison), α=0.05")
    ci = sg.bootstrap_ci(base[:, 0], base[:, 0], n_resamples=100)
    assert sg.ci_note(ci) == "95% CI of Δ: paired bootstrap over users, 100 resamples (seed 0), percentile"


def test_one_user_all_zero_and_missing_cells():
    d = np.array([[0.25, np.nan, np.nan], [0.0, 0.0, np.nan], [np.nan] * 3, [-0.5, np.nan, 0.5]])
    assert np.isnan(sg.t_pvalues(d)[:3]).all()  # one user: no variance; all zero; no users
    assert sg.t_pvalues(d)[3] == pytest.approx(1.0)
    assert sg.wilcoxon_pvalues(d)[0] == scipy_wilcoxon([0.25]) == 1.0
    assert np.isnan(sg.wilcoxon_pvalues(d)[1:3]).all()
    # one user: both signs equally likely, p = 1 (scipy's permutation_test refuses n = 1)
    assert sg.randomization_pvalues(d)[0] == 1.0 and np.isnan(sg.randomization_pvalues(d)[1:3]).all()
    assert sg.randomization_pvalues(d)[3] == scipy_randomization(np.array([-0.5, 0.5])) == 1.0
    c = sg.compare(d)
    assert c.family == 1 and c.n.tolist() == [1, 2, 0, 2] and np.isnan(c.mean[2]) and c.mean[3] == 0.0


def test_unknown_test_is_an_error():
    with pytest.raises(ValueError, match="unknown test 'sign'"):
        sg.compare(np.zeros((2, 3)), test="sign")


def test_significance_imports_no_scipy_until_a_test_runs():
    code = """
import sys, numpy as np
import ablate.report.significance as sg
before = sorted(m for m in ("scipy", "pandas", "torch") if m in sys.modules)
sg.randomization_pvalues(np.arange(20.0) - 5, n_resamples=100)
sg.correct([0.01, 0.2]); sg.bootstrap_ci(np.ones(5), np.ones(5), n_resamples=10)
middle = "scipy" in sys.modules
sg.t_pvalues(np.arange(20.0) - 5); sg.wilcoxon_pvalues(np.arange(80.0) - 5)
print(before, middle, "scipy.special" in sys.modules, "scipy.stats" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False True False"

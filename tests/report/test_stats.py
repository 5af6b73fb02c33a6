"""The vectorised paired t-test of ``ablate table`` equals ``scipy.stats.ttest_rel``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats as sps

from ablate.report import stats


def test_paired_pvalues_equal_ttest_rel_row_by_row():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, 8)
    rows = base + rng.normal(0.002, 0.01, (2000, 8))
    rows[rng.random(rows.shape) < 0.4] = np.nan  # missing seeds: every row its own set
    base[5] = np.nan
    rows[0] = base  # identical: no test
    p = stats.paired_pvalues(rows, base)
    tested = 0
    for row, got in zip(rows, p):
        ok = ~np.isnan(row) & ~np.isnan(base)
        if ok.sum() < 2 or (row[ok] == base[ok]).all():
            assert math.isnan(got)
            continue
        want = sps.ttest_rel(row[ok], base[ok]).pvalue
        # scipy's own t tail for one degree of freedom is off by up to ~1e-9 near t = 0
        assert got == pytest.approx(want, rel=1e-8), (row[ok], base[ok])
        tested += 1
    assert tested > 1500
    assert math.isnan(p[0])


def test_t_two_sided_equals_scipy_stdtr():
    t = np.concatenate([[0.0], np.logspace(-3, 3, 300), np.linspace(0.5, 40, 300)])
    for df in [*range(1, 41), 57, 100]:
        got = stats.t_two_sided(t, df)
        want = 2 * special.stdtr(df, -t)
        np.testing.assert_allclose(got[want > 1e-300], want[want > 1e-300], rtol=1e-11, atol=0)
    # several degrees of freedom in one call, signs, infinities, invalid df
    got = stats.t_two_sided([-2.0, 2.0, np.inf, -np.inf, 3.0, np.nan, 1.0], [1, 4, 2, 7, 9, 3, 0.5])
    want = 2 * special.stdtr([1, 4, 2, 7, 9, 3], -np.abs([-2.0, 2.0, np.inf, -np.inf, 3.0, np.nan]))
    np.testing.assert_allclose(got[:5], want[:5], rtol=1e-13)
    assert math.isnan(got[5]) and math.isnan(got[6])


def test_t_two_sided_exact_closed_forms():
    t = np.logspace(-9, 2, 200)
    np.testing.assert_allclose(stats.t_two_sided(t, 1), 2 / np.pi * np.arctan(1 / t), rtol=1e-13)  # Cauchy
    np.testing.assert_allclose(stats.t_two_sided(t, 2), 2 / (np.sqrt(2 + t * t) * (np.sqrt(2 + t * t) + t)), rtol=1e-13)


def test_marks_of_many_equal_mark():
    p = np.array([0.009, 0.01, 0.049, 0.05, 0.5, np.nan, 0.0])
    assert stats.marks(p) == [stats.mark(None if math.isnan(x) else x) for x in p] == ["**", "*", "*", "", "", "", "**"]

"""Paired significance of a row against the baseline, seed by seed.

Two rows run with the same seeds share the data split and the initial state each seed
fixes, so their per-seed scores are paired: the test is ``scipy.stats.ttest_rel`` over
the seeds both rows have finished. With fewer than two common seeds there is no test.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

LEVELS = ((0.01, "**"), (0.05, "*"))


def paired_p(row: pd.Series, baseline: pd.Series) -> float | None:
    """p-value of a two-sided paired t-test over common seeds, or None when untestable.

    ``row`` and ``baseline`` are per-seed values of one metric indexed by seed. Identical
    pairs (every difference zero) give no p-value rather than scipy's NaN.
    """
    both = pd.concat([row.rename("a"), baseline.rename("b")], axis=1).dropna()
    if len(both) < 2:
        return None
    diff = both["a"] - both["b"]
    if (diff == 0).all():
        return None
    p = stats.ttest_rel(both["a"], both["b"]).pvalue
    return None if p is None or math.isnan(p) else float(p)


def mark(p: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else empty."""
    if p is None:
        return ""
    for level, sign in LEVELS:
        if p < level:
            return sign
    return ""

"""Paired significance of a row against the baseline, seed by seed.

Two rows run with the same seeds share the data split and the initial state each seed
fixes, so their per-seed scores are paired: the test is ``scipy.stats.ttest_rel`` over
the seeds both rows have finished. With fewer than two common seeds there is no test.
"""

from __future__ import annotations

import math

import numpy as np
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


def paired_many(wide: pd.DataFrame, baseline: str, rows: list[str] | None = None) -> dict[str, float | None]:
    """:func:`paired_p` of many rows at once: ``wide`` is rows x seeds for one metric.

    Rows sharing the same set of seeds with the baseline are tested in one vectorised
    ``ttest_rel(..., axis=1)`` call, so a table of thousands of rows stays fast.
    """
    if baseline not in wide.index:
        return {}
    base = wide.loc[baseline]
    others = wide.drop(index=baseline)
    if rows is not None:
        others = others.loc[[r for r in rows if r in others.index]]
    out: dict[str, float | None] = {}
    if others.empty:
        return out
    ok = others.notna().to_numpy() & base.notna().to_numpy()[None, :]
    patterns = pd.Series([row.tobytes() for row in ok], index=others.index)
    for _, names in patterns.groupby(patterns, sort=False).groups.items():
        mask = ok[others.index.get_indexer(names)[0]]
        if mask.sum() < 2:
            out.update({r: None for r in names})
            continue
        a = others.loc[names].to_numpy(float)[:, mask]
        b = np.broadcast_to(base.to_numpy(float)[mask], a.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            pvals = np.atleast_1d(stats.ttest_rel(a, b, axis=1).pvalue)
        same = (a == b).all(axis=1)
        for r, p, s in zip(names, pvals, same):
            out[r] = None if s or math.isnan(p) else float(p)
    return out


def mark(p: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else empty."""
    if p is None:
        return ""
    for level, sign in LEVELS:
        if p < level:
            return sign
    return ""

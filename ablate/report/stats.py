"""Paired significance of a row against the baseline, seed by seed.

Two rows run with the same seeds share the data split and the initial state each seed
fixes, so their per-seed scores are paired: the test is the two-sided paired t-test of
``scipy.stats.ttest_rel`` over the seeds both rows have finished. With fewer than two
common seeds there is no test.

The test is computed here for thousands of rows at once (array operations, whatever
seeds each row has) with the formulas ``ttest_rel`` uses, and the Student t tail in
closed form for the integer degrees of freedom a paired test has
(:func:`t_two_sided`): importing scipy took longer than rendering a 10,000-run table.
``tests/report/test_stats.py`` checks both against scipy.
"""

from __future__ import annotations

import math

import numpy as np

LEVELS = ((0.01, "**"), (0.05, "*"))


def paired_pvalues(rows: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p-values of each row of ``rows`` (rows x seeds) against
    ``baseline`` (seeds), over the seeds both have (NaN marks a missing seed).

    NaN where there is no test: fewer than two common seeds, or every difference zero
    (scipy answers NaN there too). Otherwise ``scipy.stats.ttest_rel(row, base).pvalue``
    on the common seeds: the same mean and variance of the differences (second central
    moment x n/(n-1)), t = mean / sqrt(var/n), p = P(|T_{n-1}| >= |t|).
    """
    a = np.asarray(rows, dtype=float)
    b = np.broadcast_to(np.asarray(baseline, dtype=float), a.shape)
    ok = ~(np.isnan(a) | np.isnan(b))
    n = ok.sum(axis=1).astype(float)
    out = np.full(len(a), np.nan)
    d = np.where(ok, a - b, 0.0)
    testable = (n >= 2) & (d != 0).any(axis=1)
    if not testable.any():
        return out
    d, ok, n = d[testable], ok[testable], n[testable]
    mean = d.sum(axis=1) / n
    dev = np.where(ok, d - mean[:, None], 0.0)
    var = (dev * dev).sum(axis=1) / n * (n / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(var / n)
    out[testable] = t_two_sided(t, n - 1)
    return out


def t_two_sided(t, df) -> np.ndarray:
    """P(|T| >= |t|) for Student's t with integer ``df`` >= 1 degrees of freedom
    (``2 * scipy.special.stdtr(df, -abs(t))``), elementwise; NaN for other ``df``.

    Closed forms for integer df (Abramowitz & Stegun 26.7.3-4), with c = cos(theta) =
    sqrt(df / (df + t^2)), s = sin(theta), x = c^2 and m = floor(df / 2):

    * even df: p = 1 - s * sum_{k<m} a_k x^k, a_0 = 1, a_k = a_{k-1} (2k-1)/(2k);
    * odd df:  p = 1 - (2/pi) (theta + s c sum_{k<m} b_k x^k), b_0 = 1, b_k = b_{k-1} 2k/(2k+1).

    Where p < 0.1 that difference would lose digits, so p is summed directly as the rest
    of the same series (the full sums are 1/s and arcsin(c)/(s c)):
    p = s sum_{k>=m} a_k x^k, or (2/pi) s c sum_{k>=m} b_k x^k. Relative error < 1e-14
    against 40-digit arithmetic (scipy's own stdtr is off by up to 1e-9 for df=1).
    """
    t = np.abs(np.asarray(t, dtype=float))
    df = np.broadcast_to(np.asarray(df, dtype=float), t.shape)
    p = np.full(t.shape, np.nan)
    valid = (df >= 1) & (df == np.floor(df))
    p[valid & np.isinf(t)] = 0.0
    fin = valid & np.isfinite(t)
    if not fin.any():
        return p
    t, nu = t[fin], df[fin]
    root = np.sqrt(nu)
    r = np.hypot(root, t)
    s, c = t / r, root / r
    x = c * c
    odd = nu % 2 == 1
    m = np.floor(nu / 2)  # terms of the finite sum
    total, term = np.zeros_like(t), np.ones_like(t)  # term: coefficient_k x^k
    for k in range(int(m.max())):
        total = np.where(k < m, total + term, total)
        term = np.where(k < m, term * x * _ratio(k, odd), term)
    out = np.where(odd, 1 - (2 / np.pi) * (np.arctan2(t, root) + s * c * total), 1 - s * total)
    small = out < 0.1
    if small.any():  # the tail, from term m on, until it stops adding
        term, x, k, odd = term[small], x[small], m[small], odd[small]
        tail = term.copy()
        going = (term > 0) & (x > 0)
        while going.any():
            term = term * x * _ratio(k, odd)
            tail += term
            k = k + 1
            going = term > 1e-17 * tail
        out[small] = np.where(odd, (2 / np.pi) * s[small] * c[small] * tail, s[small] * tail)
    p[fin] = out
    return p


def _ratio(k, odd: np.ndarray) -> np.ndarray:
    """coefficient_{k+1} / coefficient_k of the series in :func:`t_two_sided`."""
    return np.where(odd, (2 * k + 2) / (2 * k + 3), (2 * k + 1) / (2 * k + 2))


def paired_p(row, baseline) -> float | None:
    """p-value of a two-sided paired t-test over common seeds, or None when untestable.

    ``row`` and ``baseline`` are per-seed values of one metric (pandas Series indexed by
    seed). Identical pairs (every difference zero) give no p-value rather than scipy's NaN.
    """
    seeds = row.index.union(baseline.index)
    p = paired_pvalues(row.reindex(seeds).to_numpy(float)[None, :], baseline.reindex(seeds).to_numpy(float))[0]
    return None if math.isnan(p) else float(p)


def paired_many(wide, baseline: str, rows: list[str] | None = None) -> dict[str, float | None]:
    """:func:`paired_p` of many rows at once: ``wide`` is rows x seeds (a DataFrame) for
    one metric. Returns ``{row: p or None}`` for ``rows`` (default: every row but the
    baseline)."""
    if baseline not in wide.index:
        return {}
    base = wide.loc[baseline]
    others = wide.drop(index=baseline)
    if rows is not None:
        others = others.loc[[r for r in rows if r in others.index]]
    if others.empty:
        return {}
    p = paired_pvalues(others.to_numpy(float), base.to_numpy(float))
    return {r: None if math.isnan(x) else float(x) for r, x in zip(others.index, p.tolist())}


def marks(p: np.ndarray) -> list[str]:
    """:func:`mark` of many p-values at once (NaN: no test)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, "", dtype=object)
    for level, sign in reversed(LEVELS):
        out[p < level] = sign
    return out.tolist()


def mark(p: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else empty."""
    if p is None:
        return ""
    for level, sign in LEVELS:
        if p < level:
            return sign
    return ""

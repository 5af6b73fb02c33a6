"""Per-user paired significance: is a row really better than the baseline, per column?

Recommender and IR papers test a difference between two systems over the test users:
each user's recall@k (ndcg@k, ...) under row A and under the baseline on the same test
set is a pair, and a paired test over those pairs has hundreds or thousands of degrees
of freedom where a test over 1-3 seeds has 0-2. How users of several seeds combine is
:func:`ablate.peruser.pair`'s business: what arrives here is each cell's per-user
differences ``d = row - baseline``.

Everything is vectorised over cells: ``d`` is an array ``(..., users)`` (rows x users,
or columns x rows x users), NaN where a cell has no value for a user (rows that paired
different users share the axis). Each cell is tested over its own non-NaN users, and a
cell whose differences are all zero (two identical runs) is not tested (NaN), as
:mod:`ablate.report.stats` does over seeds.

Tests (:data:`TESTS`), each equal to its scipy reference on the same vector (checked in
``tests/report/test_significance.py``):

* ``user-t``: the two-sided paired Student t-test, ``scipy.stats.ttest_rel(a, b)`` =
  ``ttest_1samp(d, 0)``. The default: it tests the mean difference, which is what the
  table's Δ reports, and with hundreds of users its normal approximation is sound even
  for the skewed, zero-heavy per-user recall.
* ``wilcoxon``: the signed-rank test, ``scipy.stats.wilcoxon(d)`` with scipy's defaults
  (zeros dropped, no continuity correction, ``method='auto'``). It tests a median shift,
  not the mean: it can disagree with the t-test when many users tie at zero.
* ``randomization``: Fisher's paired randomization test of the mean difference (each
  user's sign flipped at random under the null), two-sided, ``n_resamples`` seeded
  flips, all cells at once with one sign matrix; enumerated exactly when
  ``2**n <= n_resamples``. Its p-value is scipy's ``permutation_test`` estimator.

Corrections (:func:`correct`) over every cell tested at once (NaN cells are not in the
family): Holm (default; as powerful as Bonferroni or more, same guarantee) and
Bonferroni, equal to statsmodels' ``multipletests``. :func:`ties_with_best` asks the
other question with the same machinery: which rows does the best row not beat.
:func:`bootstrap_ci` gives the interval of the table's relative Δ by a paired bootstrap
over users.

Import cost: numpy only at import; ``scipy.special`` (about 0.15 s, not
``scipy.stats`` at 0.4-0.6 s) is imported by the t-test and by Wilcoxon's normal
approximation when they run, so a table without per-user tests never loads scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TESTS = {"user-t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "randomization": "paired randomization test"}
CORRECTIONS = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "no correction"}
N_RESAMPLES = 10_000
# Resamples drawn and multiplied at once: BATCH x users float64 (48 MB for ml-1m's 6,040 users).
# bootstrap_ci draws like scipy.stats.bootstrap(..., batch=BATCH), so the two can be compared draw for draw.
BATCH = 1000
_EPS100 = np.finfo(np.float64).eps * 100  # scipy.stats.permutation_test's tolerance for equal statistics
_WILCOXON_EXACT_MAX = 50  # scipy's method='auto': the exact null distribution up to n = 50 ...
_WILCOXON_PERMUTATION_MAX = 13  # ... with zeros or ties, an exact permutation test up to n = 13 (2**13 <= 9999)


def _cells(d) -> tuple[np.ndarray, tuple[int, ...]]:
    """``d`` as a 2-D float64 array cells x users, and the leading shape to restore."""
    x = np.asarray(d, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("d must have a users axis (the last one)")
    shape = x.shape[:-1]
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x, shape


def _testable(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid mask, users per cell, cells with any non-zero difference)."""
    ok = ~np.isnan(x)
    return ok, ok.sum(axis=1), (ok & (x != 0)).any(axis=1)


# ------------------------------------------------------------------------------ t-test


def t_pvalues(d) -> np.ndarray:
    """Two-sided paired t-test p-values, shape ``d.shape[:-1]``.

    Per cell over its non-NaN users: t = mean / sqrt(var / n) with the unbiased variance,
    p = 2 P(T_{n-1} >= |t|) (``scipy.special.stdtr``, as ``ttest_1samp`` computes it).
    NaN for fewer than two users or all-zero differences. Equal differences that are not
    zero have variance 0 and p = 0, as in scipy.
    """
    x, shape = _cells(d)
    ok, n, nonzero = _testable(x)
    p = np.full(len(x), np.nan)
    test = (n >= 2) & nonzero
    if test.any():
        from scipy.special import stdtr

        xt, okt, nt = np.where(ok[test], x[test], 0.0), ok[test], n[test].astype(np.float64)
        mean = xt.sum(axis=1) / nt
        dev = np.where(okt, xt - mean[:, None], 0.0)
        var = (dev * dev).sum(axis=1) / nt * (nt / (nt - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = mean / np.sqrt(var / nt)
        p[test] = 2 * stdtr(nt - 1, -np.abs(t))
    return p.reshape(shape)


# ---------------------------------------------------------------------------- Wilcoxon


def _abs_ranks(x: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average ranks of |x| among each row's ``use`` entries (others: rank 0), each row's
    tie term sum(t^3 - t) over its groups of equal |x|, and whether it has a tie."""
    rows, cols = x.shape
    a = np.where(use, np.abs(x), np.inf)
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    start = np.ones_like(s, dtype=bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    first = np.flatnonzero(start)  # flat index of each group's first element
    size = np.diff(first, append=s.size)
    at = first % cols  # position of the group in its row, 0-based
    finite = np.isfinite(s.ravel()[first])
    avg = np.where(finite, at + 1 + (size - 1) / 2, 0.0)
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, np.repeat(avg, size).reshape(rows, cols), axis=1)
    row_of = first // cols
    big = size.astype(np.float64)
    tie = np.bincount(row_of, weights=np.where(finite, big**3 - big, 0.0), minlength=rows)
    has_tie = np.bincount(row_of, weights=(finite & (size > 1)).astype(np.float64), minlength=rows) > 0
    return ranks, tie, has_tie


def _wilcoxon_counts(n: int, _cache: dict[int, np.ndarray] = {}) -> np.ndarray:  # noqa: B006 (a cache)
    """Number of sign patterns of ranks 1..n whose positive ranks sum to r, r = 0..n(n+1)/2
    (exact integers; scipy's pmf is these over 2**n)."""
    if n not in _cache:
        c = np.ones(1, dtype=np.int64)
        for k in range(1, n + 1):
            nxt = np.zeros(k * (k + 1) // 2 + 1, dtype=np.int64)
            nxt[: len(c)] += c
            nxt[k:] += c
            c = nxt
        _cache[n] = c
    return _cache[n]


def _two_sided_counts(null: np.ndarray, observed: float) -> tuple[int, int]:
    """scipy.stats.permutation_test's counts: null <= observed + gamma, null >= observed - gamma."""
    gamma = abs(_EPS100 * observed)
    return int(np.count_nonzero(null <= observed + gamma)), int(np.count_nonzero(null >= observed - gamma))


def _sign_patterns(n: int) -> np.ndarray:
    """All 2**n sign vectors of length n (+1/-1), one per row."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return 1.0 - 2.0 * bits


def wilcoxon_pvalues(d) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values, equal to ``scipy.stats.wilcoxon(d).pvalue``
    with its defaults, shape ``d.shape[:-1]``.

    Zeros are dropped ('wilcox'); ranks of |d| are averaged over ties. ``method='auto'``
    decides by n, the cell's number of users *including* zeros, as scipy 1.17 does (the
    tests compare with the installed scipy, so a change of its rule shows there):

    * n > 50: the normal approximation, without continuity correction, with the tie
      correction of the variance: z = (R+ - m(m+1)/4) / sqrt((m(m+1)(2m+1) - sum(t^3 -
      t)/2) / 24), m = non-zero differences; p = 2 Phi(-|z|). Every real table is here:
      per-user recall has many zeros and ties.
    * n <= 50, no zeros and no ties: the exact null distribution of R+;
      p = 2 min(P(R+ <= r), P(R+ >= r)), at most 1.
    * n <= 13 with zeros or ties: an exact permutation test of R+ over all sign flips
      (``permutation_test``'s two-sided rule); 13 < n <= 50 with them: the normal
      approximation.

    NaN where every difference is zero or missing (scipy answers NaN or 1 there).
    """
    x, shape = _cells(d)
    ok, n, nonzero = _testable(x)
    p = np.full(len(x), np.nan)
    if not nonzero.any():
        return p.reshape(shape)
    use = ok & (x != 0)
    m = use.sum(axis=1)
    ranks, tie, has_tie = _abs_ranks(x, use)
    r_plus = np.where(use & (x > 0), ranks, 0.0).sum(axis=1)
    exact = nonzero & (n <= _WILCOXON_EXACT_MAX) & (m == n) & ~has_tie
    permute = nonzero & (n <= _WILCOXON_PERMUTATION_MAX) & ~exact
    normal = nonzero & ~exact & ~permute
    for i in np.flatnonzero(exact):
        counts = _wilcoxon_counts(int(m[i]))
        cum = np.cumsum(counts)
        r = r_plus[i]
        le = cum[int(math.ceil(r))]  # P(R+ <= ceil r) * 2**m
        lo = int(math.floor(r))
        ge = cum[-1] - (cum[lo - 1] if lo > 0 else 0)  # P(R+ >= floor r) * 2**m
        p[i] = min(1.0, 2 * min(le, ge) / 2.0 ** m[i])
    for i in np.flatnonzero(permute):  # flipping a zero changes nothing: 2**m patterns, same proportions as 2**n
        rk = ranks[i][use[i]]
        null = (_sign_patterns(len(rk)) > 0) @ rk  # R+ under every sign flip (ranks of |d| do not move)
        le, ge = _two_sided_counts(null, float(r_plus[i]))
        p[i] = min(1.0, 2 * min(le, ge) / len(null))
    if normal.any():
        from scipy.special import ndtr

        mm = m[normal].astype(np.float64)
        mean = mm * (mm + 1) * 0.25
        se = np.sqrt((mm * (mm + 1) * (2 * mm + 1) - tie[normal] / 2) / 24)
        z = (r_plus[normal] - mean) / se
        p[normal] = 2 * ndtr(-np.abs(z))
    return p.reshape(shape)


# ------------------------------------------------------------------------ randomization


def randomization_pvalues(d, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Two-sided paired randomization (sign-flip) test of the mean difference, shape
    ``d.shape[:-1]``.

    Under the null a user's difference is as likely to have either sign, so the null
    distribution of the mean is that of mean(s_i d_i) over random signs s. The p-value
    is ``scipy.stats.permutation_test((d,), mean, permutation_type='samples')``'s:

    * exact, when 2**n <= ``n_resamples``: every sign vector, p = 2 min(#{null <= obs},
      #{null >= obs}) / 2**n, at most 1 (equal within scipy's 100 eps relative
      tolerance); this equals scipy's p exactly, the sums being computed in scipy's order;
    * otherwise Monte Carlo with B = ``n_resamples`` random sign vectors:
      p = 2 min(#{null <= obs} + 1, #{null >= obs} + 1) / (B + 1), at most 1 (the
      observed arrangement counted once: never 0, a valid p-value). Its standard error
      is about sqrt(p (2 - p) / B) (twice that of the one-sided count q = p/2:
      0.01 near p = 1, 0.003 at p = 0.05, for B = 10,000).

    The random signs are bits of ``numpy.random.default_rng(seed)``, one sign per user
    column of ``d`` and resample, shared by every cell (common random numbers: cells are
    compared under the same flips), drawn ``BATCH`` resamples at a time and multiplied
    with all cells' differences in one matrix product. NaN for all-zero differences.
    """
    x, shape = _cells(d)
    ok, n, nonzero = _testable(x)
    p = np.full(len(x), np.nan)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    exact = nonzero & (2.0 ** np.minimum(n, 1023) <= n_resamples)
    for i in np.flatnonzero(exact):
        v = x[i][ok[i]]
        # Summed left to right as scipy sums its null distribution (its resamples reach the
        # statistic as a strided array, which numpy reduces in order); the observed mean by
        # np.mean (pairwise), as scipy computes it. Sums that are equal in exact arithmetic
        # can differ in the last bits (0.1 + 0.1 ...): only the same order gives the same counts.
        null = np.cumsum(_sign_patterns(len(v)) * v, axis=1)[:, -1] / len(v)
        le, ge = _two_sided_counts(null, float(np.mean(v)))
        p[i] = min(1.0, 2 * min(le, ge) / len(null))
    mc = nonzero & ~exact
    if mc.any():
        p[mc] = _sign_flip_monte_carlo(np.where(ok[mc], x[mc], 0.0), n[mc], n_resamples, seed)
    return p.reshape(shape)


def _sign_flip_monte_carlo(x0: np.ndarray, n: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """p-values of cells ``x0`` (missing users as 0: a flipped 0 adds nothing, so each
    cell's sum is over its own users; divided by its own n)."""
    users = x0.shape[1]
    xt = np.ascontiguousarray(x0.T)
    nn = n.astype(np.float64)
    observed = x0.sum(axis=1) / nn
    gamma = np.abs(_EPS100 * observed)
    le = np.zeros(len(x0), dtype=np.int64)
    ge = np.zeros(len(x0), dtype=np.int64)
    rng = np.random.default_rng(seed)
    buffer = np.empty((min(BATCH, n_resamples), users))  # reused: a fresh 48 MB array per batch costs its page faults
    for start in range(0, n_resamples, BATCH):
        b = min(BATCH, n_resamples - start)
        bits = np.unpackbits(rng.integers(0, 256, size=(b, (users + 7) // 8), dtype=np.uint8), axis=1, count=users)
        signs = buffer[:b]
        np.multiply(bits, -2.0, out=signs)
        signs += 1.0
        null = (signs @ xt) / nn
        le += np.count_nonzero(null <= observed + gamma, axis=0)
        ge += np.count_nonzero(null >= observed - gamma, axis=0)
    return np.minimum(1.0, 2 * np.minimum(le + 1, ge + 1) / (n_resamples + 1))


def pvalues(d, test: str = "user-t", *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """p-values of ``test`` (a key of :data:`TESTS`) for every cell of ``d``."""
    if test == "user-t":
        return t_pvalues(d)
    if test == "wilcoxon":
        return wilcoxon_pvalues(d)
    if test == "randomization":
        return randomization_pvalues(d, n_resamples=n_resamples, seed=seed)
    raise ValueError(f"unknown test {test!r} (one of {', '.join(TESTS)})")


# ------------------------------------------------------------------------- corrections


@dataclass(frozen=True, eq=False)
class Corrected:
    """Adjusted p-values and decisions, shaped like the p-values given (NaN / False where
    untested); ``family``: how many p-values were corrected together."""

    p_adjusted: np.ndarray
    reject: np.ndarray
    family: int
    method: str
    alpha: float


def correct(p, method: str = "holm", alpha: float = 0.05) -> Corrected:
    """Correct p-values of any shape for multiple comparisons, as one family (NaN: not
    tested, not counted).

    With m tested p-values: ``bonferroni`` adjusts p to min(1, m p) and rejects p <=
    alpha / m; ``holm`` sorts them, rejects the k smallest where k is the first i with
    p_(i) > alpha / (m - i) (0-based), and adjusts p_(i) to min(1, max_{j<=i} (m - j)
    p_(j)); ``none`` leaves p and rejects p <= alpha. Adjusted p-values and decisions
    equal ``statsmodels.stats.multitest.multipletests(p, alpha, method)``'s, decisions
    computed the same way (p against alpha / (m - i), not the adjusted p against alpha,
    which can differ in the last bit).
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r} (one of {', '.join(CORRECTIONS)})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    arr = np.asarray(p, dtype=np.float64)
    flat = arr.ravel()
    tested = ~np.isnan(flat)
    q = flat[tested]
    m = len(q)
    adjusted = np.full(flat.shape, np.nan)
    reject = np.zeros(flat.shape, dtype=bool)
    if m:
        if method == "none":
            adj, rej = q.copy(), q <= alpha
        elif method == "bonferroni":
            adj, rej = np.minimum(q * m, 1.0), q <= alpha / m
        else:
            order = np.argsort(q, kind="stable")
            qs = q[order]
            factors = np.arange(m, 0, -1)
            above = np.flatnonzero(qs > alpha / factors)
            k = above[0] if len(above) else m
            adj_sorted = np.minimum(np.maximum.accumulate(qs * factors), 1.0)
            adj, rej = np.empty(m), np.empty(m, dtype=bool)
            adj[order], rej[order] = adj_sorted, np.arange(m) < k
        adjusted[tested], reject[tested] = adj, rej
    return Corrected(adjusted.reshape(arr.shape), reject.reshape(arr.shape), m, method, alpha)


# ------------------------------------------------------------------- the table's tests


@dataclass(frozen=True, eq=False)
class Comparison:
    """Every cell's test against its reference, corrected as one family.

    Arrays have the cells' shape (``d.shape[:-1]``): ``p`` raw and ``p_adjusted``
    p-values (NaN: untested), ``reject`` (significant at ``alpha`` after the correction),
    ``n`` users per cell, ``mean`` mean difference per cell (NaN without users).
    """

    p: np.ndarray
    p_adjusted: np.ndarray
    reject: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    test: str
    correction: str
    alpha: float
    family: int
    n_resamples: int | None = None
    seed: int | None = None


def compare(d, test: str = "user-t", correction: str = "holm", alpha: float = 0.05, *,
            n_resamples: int = N_RESAMPLES, seed: int = 0) -> Comparison:
    """Test every cell of ``d`` (``(..., users)`` per-user differences vs the reference,
    NaN = missing), then correct all tested cells as one family: pass every row x column
    the table tests in one array (columns x rows x users) so the family is the table."""
    x = np.asarray(d, dtype=np.float64)
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r} (one of {', '.join(TESTS)})")
    p = pvalues(x, test, n_resamples=n_resamples, seed=seed)
    c = correct(p, correction, alpha)
    ok = ~np.isnan(x)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0.0).sum(axis=-1) / n
    randomized = test == "randomization"
    return Comparison(p=p, p_adjusted=c.p_adjusted, reject=c.reject, n=n, mean=mean, test=test,
                      correction=correction, alpha=alpha, family=c.family,
                      n_resamples=n_resamples if randomized else None, seed=seed if randomized else None)


@dataclass(frozen=True, eq=False)
class Ties:
    """Which rows the best row does not beat: ``tied[i]`` when row i's difference from
    the best is not significant after the correction (the best row itself, and a row
    identical to it, included); False for a row with no paired users."""

    tied: np.ndarray
    comparison: Comparison


def ties_with_best(d, test: str = "user-t", correction: str = "holm", alpha: float = 0.05, *,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> Ties:
    """Ties with the best row: ``d`` holds every row's per-user differences from the best
    row of its column (``(..., rows, users)``; the best row's own are zeros). The same
    tests and correction as :func:`compare`, the family being every cell passed."""
    c = compare(d, test, correction, alpha, n_resamples=n_resamples, seed=seed)
    return Ties(tied=~c.reject & (c.n > 0), comparison=c)


# ------------------------------------------------------------------- effect size (CI)


@dataclass(frozen=True, eq=False)
class Interval:
    """Bootstrap interval per row: ``estimate`` on the sample, ``low``/``high`` the
    percentile interval at ``level``; ``relative``: of mean(a)/mean(b) - 1 (the table's
    Δ, 0.013 = +1.3 %), else of mean(a - b)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float
    n_resamples: int
    seed: int
    relative: bool


def bootstrap_ci(a, b, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95, *,
                 relative: bool = True) -> Interval:
    """Paired bootstrap percentile interval of each row's Δ vs the baseline.

    ``a``: a row's per-user values ``(..., users)``; ``b``: the baseline's, broadcast
    against ``a`` (one ``(users,)`` vector for all rows, or one per row). A user counts
    where both are finite. Each resample draws the row's users with replacement and
    keeps each drawn user's pair (a_u, b_u) together, since the pairing is what the
    interval is about; the statistic is sum(a*)/sum(b*) - 1 (= mean(a*)/mean(b*) - 1)
    or mean(a* - b*). The interval is the (1 - level)/2 and (1 + level)/2 quantiles
    (linear interpolation) of the B = ``n_resamples`` statistics.

    Vectorised: the resample counts of a batch are a matrix W (BATCH x users), so the
    sums of every row are one product W @ A (a baseline that several rows share is
    summed once). Rows that paired the same users share
    draws; each such group draws from its own ``default_rng(seed)`` exactly as
    ``scipy.stats.bootstrap((a, b), ..., paired=True, method='percentile',
    batch=BATCH, rng=numpy.random.default_rng(seed))`` does, so a row's interval equals
    scipy's up to rounding of the sums, and does not depend on the other rows.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    av = np.asarray(a, dtype=np.float64)
    bv = np.asarray(b, dtype=np.float64)
    av, bv = np.broadcast_arrays(av, bv)
    shape = av.shape[:-1]
    A, B = av.reshape(-1, av.shape[-1]), bv.reshape(-1, bv.shape[-1])
    ok = ~np.isnan(A) & ~np.isnan(B)
    rows = len(A)
    est, low, high = np.full(rows, np.nan), np.full(rows, np.nan), np.full(rows, np.nan)
    q = ((1 - level) / 2, (1 + level) / 2)
    groups: dict[bytes, list[int]] = {}  # rows by the users they paired
    for i, key in enumerate(np.packbits(ok, axis=1)):
        groups.setdefault(key.tobytes(), []).append(i)
    for members in groups.values():
        idx, cols = np.array(members), np.flatnonzero(ok[members[0]])
        n = len(cols)
        if n == 0:
            continue
        ga, gb = A[np.ix_(idx, cols)], B[np.ix_(idx, cols)]
        distinct: dict[bytes, int] = {}  # rows of one column share the baseline: its sums once
        which = np.array([distinct.setdefault(row.tobytes(), len(distinct)) for row in gb])
        first = np.unique(which, return_index=True)[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            est[idx] = _delta(ga.sum(axis=1), gb.sum(axis=1), n, relative)
        theta = np.empty((n_resamples, len(idx)))
        rng = np.random.default_rng(seed)
        at, bt = ga.T.copy(), gb[first].T.copy()
        buffer = np.empty((min(BATCH, n_resamples), n))
        for start in range(0, n_resamples, BATCH):
            size = min(BATCH, n_resamples - start)
            draw = rng.integers(0, n, (size, n))  # scipy's _bootstrap_resample draw
            w = buffer[:size]
            for r in range(size):  # row by row into one buffer: cache-sized, no page faults
                w[r] = np.bincount(draw[r], minlength=n)
            sa, sb = w @ at, (w @ bt)[:, which]
            with np.errstate(divide="ignore", invalid="ignore"):
                theta[start:start + size] = _delta(sa, sb, n, relative)
        low[idx], high[idx] = np.quantile(theta, q, axis=0)
    return Interval(est.reshape(shape), low.reshape(shape), high.reshape(shape), level, n_resamples, seed, relative)


def _delta(sum_a, sum_b, n: int, relative: bool):
    return sum_a / sum_b - 1 if relative else (sum_a - sum_b) / n


# ----------------------------------------------------------------------------- notes


def _count(n: int) -> str:
    return f"{n:,}"


def footnote(comparison: Comparison, seeds=None) -> str:
    """One line naming the test, the number of users and seeds, the correction, the
    family and alpha: ``paired t-test over 943 users (seed 2020), Holm over 36
    comparisons, α=0.05``."""
    name = TESTS[comparison.test]
    if comparison.test == "randomization":
        name += f" ({_count(comparison.n_resamples)} sign flips, seed {comparison.seed})"
    n = np.asarray(comparison.n)[~np.isnan(np.asarray(comparison.p))]
    users = "no users" if not n.size else (
        f"{_count(int(n.min()))} users" if n.min() == n.max() else f"{_count(int(n.min()))}–{_count(int(n.max()))} users")
    seeds = sorted(seeds) if seeds is not None else []
    where = "" if not seeds else (f" (seed {seeds[0]})" if len(seeds) == 1
                                  else f" (seeds {', '.join(map(str, seeds))}; per-user mean over seeds)")
    family = f"{comparison.family} comparison{'' if comparison.family == 1 else 's'}"
    if comparison.correction == "none":
        corr = f"no correction ({family})"
    else:
        corr = f"{CORRECTIONS[comparison.correction]} over {family}"
    return f"{name} over {users}{where}, {corr}, α={comparison.alpha:g}"


def ci_note(interval: Interval) -> str:
    """``95% CI of Δ: paired bootstrap over users, 10,000 resamples (seed 0), percentile``."""
    what = "Δ" if interval.relative else "the mean difference"
    return (f"{interval.level * 100:g}% CI of {what}: paired bootstrap over users, "
            f"{_count(interval.n_resamples)} resamples (seed {interval.seed}), percentile")

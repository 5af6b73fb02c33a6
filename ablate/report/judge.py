"""Which differences in a table are real: per-user paired tests, corrected over the table.

A table of 61 rows bolds 0.1877 over 0.1876; the reader's question is which rows really
differ from the baseline. Recommender and IR papers answer it per user: on the same test
split, every user's recall@k or ndcg@k under a row and under the baseline is a pair, so
a paired test has as many pairs as users (943 on ml-100k, 6,040 on ml-1m), not the 1-3
seeds an ablation affords. Every row x column tested in one table is one family, and
the marks come after a correction over that family (Holm by default).

* **Pairing** (:func:`ablate.peruser.pair_columns`): runs pair when they share a seed
  (the same split); users match by id; with several seeds a user's difference is the
  mean over the seeds that evaluated the user, so n = users.
* **Tests** (:mod:`ablate.report.significance`): ``user-t`` (paired Student t, the
  default where per-user values exist), ``wilcoxon`` (signed rank), ``randomization``
  (Fisher's sign flips, 10,000 resamples, seeded), or ``seeds`` (a paired t-test over
  the seeds' means, what the table did before per-user values were kept). A row whose
  runs kept no per-user values (stored before ablate kept them) is tested over seeds,
  and a note says so.
* **Marks**: ``*`` significant at ``alpha`` after the correction, ``**`` with the
  corrected p at most 0.01; ``≈`` (``ties``) on a row whose difference from the
  column's best row is not significant after the same correction (its own family), so
  a reader sees which bold is real; ``ci``: a paired bootstrap interval of each row's
  Δ vs the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TESTS = ("auto", "user-t", "wilcoxon", "randomization", "seeds")
CORRECTIONS = ("holm", "bonferroni", "none")
STRONG = 0.01  # ``**``: the corrected p at most this
TIE_MARK = "≈"


@dataclass
class Judgement:
    """Per (row, metric): ``tests`` (p raw, p after the correction, the mark), ``tie``
    (True/False, None: not tested), ``ci`` (low, high) of the relative Δ; and the lines a
    table prints under itself."""

    tests: dict[tuple[str, str], tuple[float, float, str]] = field(default_factory=dict)  # (p, p_adjusted, sig)
    tie: dict[tuple[str, str], bool] = field(default_factory=dict)
    ci: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    estimate: dict[tuple[str, str], float] = field(default_factory=dict)  # the Δ the interval is about
    notes: list[str] = field(default_factory=list)


def check_options(test: str, correction: str, alpha: float) -> None:
    from ablate.errors import OptionError

    if test not in TESTS:
        raise OptionError("test", f"expects one of {', '.join(TESTS)}", value=test)
    if correction not in CORRECTIONS:
        raise OptionError("correction", f"expects one of {', '.join(CORRECTIONS)}", value=correction)
    if not 0 < alpha < 1:
        raise OptionError("alpha", "must be between 0 and 1", value=alpha)


def check_resamples(n_resamples: int) -> None:
    from ablate.errors import OptionError

    if n_resamples < 100:
        raise OptionError("resamples", "must be at least 100", value=n_resamples)


def _runs_by_row(frame, per_user: dict) -> dict[str, dict[int, object]]:
    """row -> {seed: PerUser} for the rows' done runs that kept per-user values."""
    from ablate.peruser import decode

    out: dict[str, dict[int, object]] = {}
    decoded: dict[int, object] = {}
    for (row, seed), rid in zip(frame.pairs, frame.pair_runs):
        data = per_user.get(rid)
        if data is None:
            continue
        if rid not in decoded:
            decoded[rid] = decode(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        out.setdefault(row, {})[seed] = decoded[rid]
    return out


def judge(frame, metrics: list[str], baseline: str | None, best: dict[str, str | None], *, per_user: dict,
          test: str = "auto", correction: str = "holm", alpha: float = 0.05, ties: bool = False, ci: bool = False,
          n_resamples: int = 10_000, seed: int = 0) -> Judgement:
    """Test every variant row of ``frame`` against ``baseline`` in every metric column,
    correct over all of them, and (``ties``) test every row against the column's best row
    (``best``: metric -> row), and (``ci``) bound each row's Δ. ``per_user``: run id ->
    encoded per-user values (:func:`ablate.report.frame.per_user`)."""
    from ablate.peruser import pair_columns, stack
    from ablate.report import significance, stats

    check_options(test, correction, alpha)
    check_resamples(n_resamples)
    out = Judgement()
    if baseline is None or baseline not in frame.rows:
        return out
    by_row = _runs_by_row(frame, per_user) if test != "seeds" else {}
    counts = dict(zip(frame.rows, frame.counts.tolist()))
    base_at = frame.rows.index(baseline)
    rows = [r for r in frame.rows if r != baseline and counts.get(r, 0) and frame.role.get(r) != "reference"]
    have = [m for m in metrics if m in frame.metrics]
    user_test = "user-t" if test == "auto" else test
    cells: list[tuple[str, str]] = []  # (row, metric) of every tested cell, in one family
    p_raw: list[float] = []
    user_pairs: list = []  # ablate.peruser.Paired of the cells tested over users
    user_cells: list[int] = []
    pairs_of: dict[tuple[str, str], object] = {}
    seeds_used: set[int] = set()
    over_seeds: list[str] = []
    untested: list[str] = []
    base_runs = by_row.get(baseline, {})
    fallback: list[str] = []  # rows tested over seeds
    for row in rows:
        row_runs = by_row.get(row, {})
        common = sorted(set(row_runs) & set(base_runs))
        if test != "seeds" and common:
            paired = pair_columns(row_runs, base_runs, have)
            for m in have:
                pr = paired.get(m)
                if pr is None or not len(pr):
                    continue
                cells.append((row, m))
                p_raw.append(np.nan)
                user_cells.append(len(cells) - 1)
                user_pairs.append(pr)
                pairs_of[(row, m)] = pr
                seeds_used.update(pr.seeds)
            continue
        fallback.append(row)
    if fallback:  # every such row at once, column by column (10,000-run tables)
        index = {r: i for i, r in enumerate(frame.rows)}
        at = np.array([index[r] for r in fallback])
        tested = np.zeros(len(fallback), dtype=bool)
        for m in have:
            wide = frame.seed_matrix(m)
            p = stats.paired_pvalues(wide[at], wide[base_at])
            ok = np.flatnonzero(~np.isnan(p))
            cells += [(fallback[i], m) for i in ok.tolist()]
            p_raw += p[ok].tolist()
            tested |= ~np.isnan(p)
        if test != "seeds":  # no per-user values in a common seed: the seeds' test, where there are seeds
            over_seeds += [r for r, t in zip(fallback, tested) if t]
            untested += [r for r, t in zip(fallback, tested) if not t]
    if user_cells:
        _, a, b = stack(user_pairs)  # one user axis, NaN where a cell did not pair the user
        p = significance.pvalues(a - b, user_test, n_resamples=n_resamples, seed=seed)
        for i, at in enumerate(user_cells):
            p_raw[at] = float(p[i])
    if cells:
        raw = np.array(p_raw, dtype=float)
        corrected = significance.correct(raw, correction, alpha)
        marks = np.where(corrected.reject & (corrected.p_adjusted <= STRONG), "**",
                         np.where(corrected.reject, "*", "")).tolist()
        out.tests = {cell: (p, adj, mark) for cell, p, adj, mark in
                     zip(cells, p_raw, corrected.p_adjusted.tolist(), marks) if p == p}  # p == p: tested (not NaN)
        out.notes.append(_footnote(user_test if user_cells else "seeds", correction, alpha, corrected.family,
                                   [len(pr) for pr in user_pairs], sorted(seeds_used), n_resamples, seed,
                                   mixed=bool(user_cells) and len(user_cells) < len(cells)))
        floor = 2 / (n_resamples + 1)  # the smallest two-sided p of a Monte Carlo randomization test
        needed = alpha if correction == "none" else alpha / corrected.family
        if user_cells and user_test == "randomization" and floor > needed:
            out.notes.append(f"with {n_resamples:,} sign flips no p falls below {floor:.1e}, and "
                             f"{_correction_words(correction, corrected.family)} needs {needed:.1e} to reject "
                             f"anything: give more resamples, or the t-test")
    if over_seeds:
        out.notes.append(f"no per-user values stored for {_names(over_seeds)}: tested over seeds "
                         "(paired t-test of the seeds' means)")
    if untested:
        out.notes.append(f"no per-user values stored for {_names(untested)}, and fewer than two seeds shared "
                         "with the baseline: not tested")
    if ties and test != "seeds":
        _ties(out, frame, by_row, have, best, counts, user_test, correction, alpha, n_resamples, seed)
    if ci and pairs_of:
        _intervals(out, pairs_of, n_resamples, seed)
    return out


def _names(rows: list[str], most: int = 6) -> str:
    return ", ".join(rows[:most]) + (f" and {len(rows) - most} more" if len(rows) > most else "")


def _ties(out: Judgement, frame, by_row, metrics, best, counts, test, correction, alpha, n_resamples, seed) -> None:
    """Each row's difference from its column's best row, tested and corrected as one
    family; a row not significantly different is tied with the best."""
    from ablate.peruser import pair_columns, stack
    from ablate.report import significance

    cells, pairs = [], []
    for m in metrics:
        top = best.get(m)
        if top is None or top not in by_row:
            continue
        for row in frame.rows:
            if row == top or not counts.get(row) or row not in by_row:
                continue
            pr = pair_columns(by_row[row], by_row[top], [m]).get(m)
            if pr is None or not len(pr):
                continue
            cells.append((row, m))
            pairs.append(pr)
    if not cells:
        return
    _, a, b = stack(pairs)
    found = significance.ties_with_best(a - b, test, correction, alpha, n_resamples=n_resamples, seed=seed)
    untested = np.isnan(found.comparison.p)  # every user's difference zero: the same numbers as the best
    for (row, m), tied, same in zip(cells, found.tied, untested):
        out.tie[(row, m)] = bool(tied or same)
    out.notes.append(f"{TIE_MARK} not significantly different from the column's best row "
                     f"({significance.TESTS[test]}, {_correction_words(correction, found.comparison.family)}, "
                     f"α={alpha:g})")


def _intervals(out: Judgement, pairs_of: dict, n_resamples: int, seed: int) -> None:
    """The paired bootstrap interval of each row's relative Δ vs the baseline."""
    from ablate.peruser import stack
    from ablate.report import significance

    keys = list(pairs_of)
    _, a, b = stack([pairs_of[k] for k in keys])
    interval = significance.bootstrap_ci(a, b, n_resamples=n_resamples, seed=seed)
    for i, k in enumerate(keys):
        if np.isfinite(interval.low[i]) and np.isfinite(interval.high[i]):
            out.ci[k] = (float(interval.low[i]), float(interval.high[i]))
            out.estimate[k] = float(interval.estimate[i])
    out.notes.append(f"[low, high]: {significance.ci_note(interval)}")


def _correction_words(correction: str, family: int) -> str:
    from ablate.report import significance

    comparisons = f"{family} comparison{'' if family == 1 else 's'}"
    return f"no correction ({comparisons})" if correction == "none" else (
        f"{significance.CORRECTIONS[correction]} over {comparisons}")


def _footnote(test: str, correction: str, alpha: float, family: int, users: list[int], seeds: list[int],
              n_resamples: int, seed: int, mixed: bool) -> str:
    from ablate.report import significance

    if test == "seeds":
        what = "paired t-test over seeds"
    else:
        what = significance.TESTS[test]
        if test == "randomization":
            what += f" ({n_resamples:,} sign flips, seed {seed})"
        lo, hi = (min(users), max(users)) if users else (0, 0)
        what += f" over {lo:,} users" if lo == hi else f" over {lo:,}–{hi:,} users"
        if seeds:
            what += f" (seed {seeds[0]})" if len(seeds) == 1 else (
                f" (seeds {', '.join(map(str, seeds))}; per-user mean over seeds)")
        if mixed:
            what += "; rows without per-user values over seeds"
    return (f"* p≤{alpha:g}, ** p≤{STRONG:g} vs the baseline after correction: {what}, "
            f"{_correction_words(correction, family)}, α={alpha:g}")

"""The comparison table: marks computed once, then rendered as rich, Markdown, LaTeX or CSV.

:func:`build` turns an :class:`~ablate.report.frame.ExperimentFrame` into a
:class:`Table` whose cells already carry every decision a careful person makes by hand:

* best / second best per column among the rows with numbers (reference rows and rows
  without finished runs do not compete). Values are compared *as shown* (rounded to
  the precision), so two cells that print the same get the same mark; ranks are dense:
  the second best is the next distinct shown value.
* ``mean ± std`` when a row has two or more seeds; a paired t-test (:mod:`.stats`)
  against the baseline marks ``*`` p<0.05, ``**`` p<0.01.
* relative change vs the baseline, for the best variant (a summary row) or every row.
* flags for the silent failures the hand-made table hid: a row printing exactly the
  numbers of an earlier row (``≡ LightGCN``), and an added loss term that stayed below
  a fraction of the main loss in every epoch (``negligible ot``).

* reference rows (published numbers, :func:`load_reference`) on top, marked † with
  their source as a footnote; they take part in no mark, Δ or test.

Renderers only format; they never decide a mark. On a terminal the table is fitted to
its width (:func:`rich_layout`): notes become marks with footnotes, then narrower
layouts are tried, so a name or header is never cut.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ablate.errors import OptionError, UsageError
from ablate.report.judge import TIE_MARK
from ablate.report.frame import ExperimentFrame

if TYPE_CHECKING:
    import pandas as pd  # imported where used: a Markdown table never needs it

DEFAULT_METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
# RecBole metrics where smaller is better; everything else (recall, ndcg, mrr, hit, ...) is larger-better.
LOWER_IS_BETTER = {"averagepopularity", "giniindex", "mae", "rmse", "logloss"}
# Loss terms that are meant to be small (weight decay); never flagged as negligible.
REGULARISERS = {"reg", "reg_loss", "l2", "emb_loss"}
NEGLIGIBLE = 0.01
REFERENCE_MARK = "†"


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    rank: str = ""  # "best" | "second" | ""
    sig: str = ""  # "*" | "**" | "": significant vs the baseline after the correction
    p: float | None = None  # the test's p-value, before the correction
    p_adjusted: float | None = None
    tie: bool | None = None  # not significantly different from the column's best (None: not tested)
    ci: tuple[float, float] | None = None  # bootstrap interval of the relative Δ vs the baseline
    delta: float | None = None  # relative change vs the baseline (0.013 = +1.3 %)
    status: str | None = None  # shown instead of numbers when the row has no finished run


@dataclass
class Row:
    name: str
    kind: str  # "reference" | "baseline" | "variant" | "summary"
    n: int = 0
    cells: dict[str, Cell] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    status: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "reference":
            return f"{self.name} {REFERENCE_MARK}"
        return f"{self.name} (n={self.n})" if self.n >= 2 else self.name


@dataclass
class Table:
    metrics: list[str]
    rows: list[Row]
    precision: int = 4
    baseline: str | None = None
    reference_source: str | None = None  # where the reference rows' numbers come from
    vs_reference: bool = False  # the cells' percentages: distance from the reference row of the same name
    short_headers: bool = False  # the notebook's column names: r10 n10 r20 ...
    footnotes: bool = False  # notes as marks on the names with footnotes (md, LaTeX; always on a terminal)
    test_notes: list[str] = field(default_factory=list)  # which test, correction, alpha, n: under the table

    @property
    def headers(self) -> list[str]:
        return [short_header(m) for m in self.metrics] if self.short_headers else list(self.metrics)

    @property
    def reference_note(self) -> str | None:
        """The footnote of the reference rows: their source, and that they were not run here."""
        if not any(r.kind == "reference" for r in self.rows):
            return None
        note = f"{REFERENCE_MARK} {self.reference_source or 'reference'}: published numbers, not run here; never ranked or tested"
        if self.vs_reference:
            note += f"; (±x%) after a value: its distance from the {REFERENCE_MARK} row of the same name (value / published - 1)"
        return note

    @property
    def has_notes(self) -> bool:
        return any(r.flags for r in self.rows)


# ---------------------------------------------------------------------------- building


def _fmt(value: float, precision: int) -> str:
    return f"{value:.{precision}f}"


def _floats(values: np.ndarray) -> list[float | None]:
    """Python floats, None for NaN."""
    return [None if v != v else v for v in values.tolist()]


def _status_text(counts: dict[str, int]) -> str:
    others = {s: n for s, n in counts.items() if s != "done"}
    return "/".join(sorted(others)) if others else "no metrics"


def negligible_terms(history: dict[int, list[dict[str, float]]], threshold: float = NEGLIGIBLE) -> dict[str, float]:
    """Added loss terms below ``threshold`` x the main loss in every epoch of every run.

    ``history`` maps run id -> per-epoch ``{term: value}`` dicts whose first key is the
    main loss. Returns ``{term: largest ratio seen}`` for the terms that never mattered.
    """
    ratios: dict[str, float] = {}
    ever_big: set[str] = set()
    for epochs in history.values():
        for losses in epochs:
            items = list(losses.items())
            if len(items) < 2:
                continue
            main = abs(float(items[0][1]))
            for term, value in items[1:]:
                if term in REGULARISERS:
                    continue
                ratio = abs(float(value)) / main if main > 0 else math.inf
                ratios[term] = max(ratios.get(term, 0.0), ratio)
                if not ratio < threshold:
                    ever_big.add(term)
    return {t: r for t, r in ratios.items() if t not in ever_big}


def _rank(rows: list[Row], metric: str, shown: list[float | None]) -> None:
    """Mark best and second best of one column. ``shown[i]``: row ``i``'s mean as printed
    (rows in build order: baselines and variants, before any summary or reference row)."""
    lower = metric.split("@")[0].lower() in LOWER_IS_BETTER
    competing = [v for r, v in zip(rows, shown) if v is not None and r.kind in ("baseline", "variant")]
    distinct = sorted(set(competing), reverse=not lower)
    best = distinct[0] if distinct else None
    second = distinct[1] if len(distinct) > 1 else None
    for r, v in zip(rows, shown):
        if v is not None and r.kind in ("baseline", "variant"):
            r.cells[metric].rank = "best" if v == best else "second" if v == second else ""


def build(frame: ExperimentFrame, metrics: list[str] | None = None, *, baseline: str | None = None,
          precision: int = 4, sort: str | None = None, delta: bool = False, reference: pd.DataFrame | None = None,
          losses: dict[int, list[dict[str, float]]] | None = None, negligible: float = NEGLIGIBLE,
          older: dict[int, tuple[str, str]] | None = None, per_user: dict | None = None, test: str = "auto",
          correction: str = "holm", alpha: float = 0.05, ties: bool = False, ci: bool = False,
          n_resamples: int = 10_000, vs_reference: bool = False) -> Table:
    """Decide every mark of the table. ``losses`` (run id -> epoch loss dicts) enables the
    negligible-term flag; ``reference`` (index name, metric columns) adds published rows;
    ``older`` (run id -> (trained by, current), :func:`ablate.report.frame.older_implementations`)
    flags rows whose numbers older code computed. ``per_user`` (run id -> encoded per-user
    values) feeds the per-user tests of :mod:`ablate.report.judge` (``test``,
    ``correction``, ``alpha``; ``ties`` with the best row; ``ci`` of Δ)."""
    from ablate.report import judge as judge_mod
    metrics = [m.lower() for m in (metrics or DEFAULT_METRICS)]
    if precision < 0 or precision > 10:
        raise OptionError("precision", f"must be between 0 and 10, got {precision}")
    have = set(frame.metrics)
    if have:
        missing = [m for m in metrics if m not in have]
        if len(missing) == len(metrics):
            raise UsageError(f"none of the metrics {', '.join(missing)} was recorded (have: {', '.join(sorted(have))})")
    if baseline is not None and baseline not in frame.rows:
        raise OptionError("baseline", f"is not a row of this table (rows: {', '.join(frame.rows[:10])})", value=repr(baseline), sep=" ")
    if baseline is None:
        baseline = next((r for r in frame.rows if frame.role.get(r) == "baseline"), None)
    judge_mod.check_options(test, correction, alpha)
    if vs_reference and (reference is None or reference.empty):
        raise OptionError("vs_reference", "needs reference rows: the published numbers to measure each row against")
    if vs_reference and (delta or ci):
        raise OptionError("vs_reference", "cannot go with delta or ci: both fill the cells' percentages")
    if sort is not None and sort.lower() not in metrics:
        raise OptionError("sort", f"is not one of the shown metrics ({', '.join(metrics)})", value=repr(sort), sep=" ")

    # Column by column over all rows at once (numpy), then one pass that makes the cells:
    # per-cell pandas lookups and per-row t-tests cost seconds on 10,000 runs.
    n_rows = len(frame.rows)
    ns = frame.counts.tolist()
    means, stds, shown = {}, {}, {}
    for m in metrics:
        means[m] = _floats(frame.column(m, "means"))
        stds[m] = _floats(frame.column(m, "stds"))
        shown[m] = [None if v is None else float(_fmt(v, precision)) for v in means[m]]  # compared as printed
    rows: list[Row] = []
    for i, name in enumerate(frame.rows):
        n = ns[i]
        kind = "baseline" if frame.role.get(name) == "baseline" else "variant"
        counts = frame.row_status(name)
        row = Row(name=name, kind=kind, n=n)
        if n == 0:
            row.status = _status_text(counts)
            row.cells = {m: Cell(status=row.status) for m in metrics}
        else:
            for m in metrics:
                mean = means[m][i]
                row.cells[m] = Cell(mean=mean, std=stds[m][i], n=n, status="n/a" if mean is None else None)
            pending = {s: c for s, c in counts.items() if s != "done"}
            if pending:
                row.flags.append(", ".join(f"{c} {s}" for s, c in sorted(pending.items())))
        rows.append(row)

    _flag_identical(rows, metrics, shown)
    for row in rows:
        made_by = {older[rid] for rid in frame.run_ids(row.name) if rid in older} if older else set()
        if made_by:
            then, now = (sorted({pair[i] for pair in made_by}) for i in (0, 1))
            row.flags.append(f"trained by older code: {', '.join(then)} (now {', '.join(now)}); `ablate run` retrains it")
    if losses:
        for row in rows:
            if row.kind != "variant" or row.n == 0:
                continue
            ids = [rid for rid in frame.run_ids(row.name) if rid in losses]
            small = negligible_terms({rid: losses[rid] for rid in ids}, negligible)
            for term, ratio in small.items():
                row.flags.append(f"negligible {term} (<{negligible * 100:g}% of main loss, max {ratio:.2%})")

    base_row = next((r for r in rows if r.name == baseline and r.n), None)
    if base_row is not None:
        for row in rows:
            if row is base_row or not row.n:
                continue
            for m in metrics:
                c, b = row.cells[m], base_row.cells[m]
                if (delta or ci) and c.mean is not None and b.mean:
                    c.delta = c.mean / b.mean - 1
    for m in metrics:
        _rank(rows, m, shown[m])
    best = {m: _best_row(rows, m) for m in metrics}
    by_name = {r.name: r for r in rows}
    verdict = judge_mod.judge(frame, metrics, baseline if base_row is not None else None, best,
                              per_user=per_user or {}, test=test, correction=correction, alpha=alpha, ties=ties,
                              ci=ci, n_resamples=n_resamples)
    for (name, m), (p, adjusted, mark) in verdict.tests.items():
        c = by_name[name].cells[m]
        c.p, c.p_adjusted, c.sig = p, adjusted, mark
    for (name, m), tie in verdict.tie.items():
        by_name[name].cells[m].tie = tie
    for (name, m), interval in verdict.ci.items():
        by_name[name].cells[m].ci = interval
    if ci and not delta:  # Δ in every cell only when asked; with --ci, beside each interval
        for row in rows:
            for c in row.cells.values():
                if c.ci is None:
                    c.delta = None
    if sort is not None:
        key = sort.lower()
        lower = key.split("@")[0] in LOWER_IS_BETTER
        rows.sort(key=lambda r: (r.cells[key].mean is None,
                                 0.0 if r.cells[key].mean is None else (r.cells[key].mean if lower else -r.cells[key].mean)))
    if vs_reference:
        for row in rows:
            if row.kind not in ("baseline", "variant") or not row.n or row.name not in reference.index:
                continue
            published = reference.loc[row.name]
            for m in metrics:
                v, c = published.get(m), row.cells[m]
                if c.mean is not None and v is not None and v == v and float(v) != 0:  # v == v: not NaN
                    c.delta = c.mean / float(v) - 1
    if base_row is not None and not delta and not vs_reference:
        summary = _best_variant_delta(rows, base_row, metrics, precision)
        if summary is not None:
            rows.append(summary)
    source = None
    if reference is not None and not reference.empty:
        rows = _reference_rows(reference, metrics) + rows
        source = reference.attrs.get("source")
    return Table(metrics=metrics, rows=rows, precision=precision, baseline=baseline, reference_source=source,
                 test_notes=verdict.notes, vs_reference=vs_reference)


def _best_row(rows: list[Row], metric: str) -> str | None:
    """The column's best row (bold), by its unrounded mean when several print the same."""
    lower = metric.split("@")[0].lower() in LOWER_IS_BETTER
    tops = [r for r in rows if r.kind in ("baseline", "variant") and r.n and r.cells[metric].rank == "best"]
    if not tops:
        return None
    pick = min if lower else max
    return pick(tops, key=lambda r: r.cells[metric].mean).name


def _flag_identical(rows: list[Row], metrics: list[str], shown: dict[str, list[float | None]]) -> None:
    """Flag a row whose shown numbers all equal an earlier row's (baseline first)."""
    seen: dict[tuple, str] = {}
    for i, row in enumerate(rows):
        if not row.n:
            continue
        key = tuple(shown[m][i] for m in metrics)
        if all(v is None for v in key):
            continue
        if key in seen:
            row.flags.append(f"≡ {seen[key]}")
        else:
            seen[key] = row.name


def _best_variant_delta(rows: list[Row], base: Row, metrics: list[str], precision: int) -> Row | None:
    """The 'improvement' row: per column, the best variant's relative change vs the baseline."""
    variants = [r for r in rows if r.kind == "variant" and r.n]
    if not variants:
        return None
    out = Row(name=f"Δ best vs {base.name}", kind="summary")
    for m in metrics:
        lower = m.split("@")[0] in LOWER_IS_BETTER
        vals = [v for v in (r.cells[m].mean for r in variants) if v is not None]
        b = base.cells[m].mean
        if not vals or not b:
            out.cells[m] = Cell(status="")
            continue
        out.cells[m] = Cell(delta=(min(vals) if lower else max(vals)) / b - 1)
    return out


def _reference_rows(reference: pd.DataFrame, metrics: list[str]) -> list[Row]:
    import pandas as pd

    out = []
    for name, values in reference.iterrows():
        row = Row(name=str(name), kind="reference")
        for m in metrics:
            v = values.get(m)
            row.cells[m] = Cell(mean=None if v is None or pd.isna(v) else float(v), status=None if v is not None and not pd.isna(v) else "")
        out.append(row)
    return out


# Metrics that are fractions: a published 18.76 (a percent) instead of 0.1876 is a typo.
FRACTIONS = {"recall", "ndcg", "precision", "hit", "mrr", "map", "itemcoverage", "giniindex"}
REFERENCE_KEYS = ("source", "split", "dataset", "rows")


def _reference_file(data: dict, where: str) -> tuple[list[dict], dict]:
    """The records and attributes of a reference file in the documented format::

        source: Lin et al., NCL, WWW 2022, Table 2 (MovieLens-1M)
        split: test            # the split the numbers are on (default test)
        dataset: ml-1m         # optional, shown with the source
        rows:
          LightGCN: {recall@10: 0.1876, ndcg@10: 0.2514}

    Checked key by key, so a wrong file is one line naming the key, never a table of
    silently missing numbers."""
    unknown = [k for k in data if k not in REFERENCE_KEYS]
    if unknown:
        raise OptionError("reference", f"unknown key {unknown[0]!r} (allowed: {', '.join(REFERENCE_KEYS)})", value=where)
    source = data.get("source")
    if not isinstance(source, str) or not source.strip() or "\n" in source.strip():
        raise OptionError("reference", "source: give the paper and table the numbers come from, on one line", value=where)
    split = data.get("split", "test")
    if split not in ("test", "valid"):
        raise OptionError("reference", f"split: must be test or valid, got {split!r}", value=where)
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise OptionError("reference", f"dataset: must be a name such as ml-1m, got {dataset!r}", value=where)
    rows = data.get("rows")
    if not isinstance(rows, dict) or not rows:
        raise OptionError("reference", f"rows: must map each row name to its metrics, e.g. LightGCN: {{recall@10: 0.1876}}", value=where)
    records = []
    for name, values in rows.items():
        if not isinstance(values, dict) or not values:
            raise OptionError("reference", f"rows.{name}: must map metrics to numbers, e.g. {{recall@10: 0.1876}}", value=where)
        rec: dict = {"name": str(name)}
        for metric, value in values.items():
            key = str(metric).lower()
            kind, at, k = key.partition("@")
            if not kind.isalpha() or (at and not k.isdigit()):
                raise OptionError("reference", f"rows.{name}.{metric}: not a metric name (as recall@10, ndcg@20, mrr@10)", value=where)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptionError("reference", f"rows.{name}.{metric}: must be a number, got {value!r}", value=where)
            if kind in FRACTIONS and not 0 <= value <= 1:
                raise OptionError("reference", f"rows.{name}.{metric}: {value} is not between 0 and 1 (a percentage?)", value=where)
            if key in rec:
                raise OptionError("reference", f"rows.{name}: {metric} given twice", value=where)
            rec[key] = float(value)
        records.append(rec)
    label = source.strip() + (f" ({dataset}, {split} split)" if dataset else f" ({split} split)")
    return records, {"source": label, "split": split}


def load_reference(path: Path, split: str | None = None) -> pd.DataFrame:
    """Published numbers from a YAML or CSV file: index = row name, columns = metrics;
    ``attrs["source"]`` names where they come from (shown as the rows' footnote).

    YAML, preferably the checked format of :func:`_reference_file` (``source``, ``split``,
    ``rows``). Also read: ``{LightGCN: {recall@20: 0.1830, ...}, ...}`` or a list of
    mappings with a ``name`` (or ``model``) key, and CSV with a ``name`` or ``model``
    column (else the first); their source is the file's name. ``split``: the split the
    table shows; numbers published for another split are refused.
    """
    import pandas as pd

    p = Path(path)
    where = str(path)
    if not p.is_file():
        raise OptionError("reference", "no such file", value=where)
    attrs = {"source": p.name, "split": None}
    try:
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
            key = next((c for c in df.columns if str(c).lower() in ("name", "model")), df.columns[0])
            df = df.set_index(key)
        else:
            from ablate.spec import load_yaml

            data = load_yaml(p.read_text(encoding="utf-8"), p)
            if isinstance(data, dict) and "rows" in data:
                records, attrs = _reference_file(data, where)
            else:
                if isinstance(data, dict):
                    data = [{"name": k, **(v or {})} for k, v in data.items()]
                if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
                    raise OptionError("reference", "expected source, split and rows (see ablate table --help), a mapping name -> metrics or a list of rows", value=where)
                records = []
                for d in data:
                    name = d.get("name", d.get("model"))
                    if name is None:
                        raise OptionError("reference", "a row has no name", value=where)
                    records.append({"name": str(name), **{k: v for k, v in d.items() if k not in ("name", "model")}})
            df = pd.DataFrame(records).set_index("name")
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas/yaml errors become one line
        raise OptionError("reference", str(err).splitlines()[0], value=where) from None
    if split is not None and attrs["split"] is not None and attrs["split"] != split:
        raise OptionError("reference", f"its numbers are on the {attrs['split']} split; the table shows the {split} split", value=where)
    df.columns = [str(c).lower() for c in df.columns]
    try:
        df = df.apply(pd.to_numeric)
    except (ValueError, TypeError) as err:
        raise OptionError("reference", f"non-numeric value ({err})", value=where) from None
    df.attrs.update(attrs)
    return df


def from_store(db: str, targets: list[str] | None = None, *, overrides: dict | None = None,
               metrics: list[str] | None = None, split: str = "test", baseline: str | None = None, precision: int = 4,
               sort: str | None = None, delta: bool = False, reference: Path | None = None,
               negligible: float = NEGLIGIBLE, test: str = "auto", correction: str = "holm", alpha: float = 0.05,
               ties: bool = False, ci: bool = False, n_resamples: int = 10_000, vs_reference: bool = False) -> Table:
    """The table of stored experiments (spec files or names; default the latest), every
    mark decided (:func:`build`).

    All reads happen in one read-only snapshot of the store (on SQLite: without
    SQLAlchemy, see :mod:`ablate.report.frame`)."""
    from ablate.errors import StoreError
    from ablate.report import frame as frame_mod
    from ablate.storefile import store_exists

    if not store_exists(db):
        raise StoreError(f"no results store at {db} (run `ablate run SPEC --db {db}` first)")
    with frame_mod.snapshot(db) as snap:
        names = frame_mod.resolve_targets(snap, targets, overrides)
        data = frame_mod.load(snap, names, split)
        if not data.rows:
            raise UsageError(f"experiment {', '.join(names)} has no runs")
        losses = frame_mod.loss_history(snap, data.done_variant_ids())
        older = frame_mod.older_implementations(snap, data.run_ids())
        per_user = frame_mod.per_user(snap, data.pair_runs, split) if test != "seeds" else {}
    ref = load_reference(reference, split) if reference is not None else None
    return build(data, metrics, baseline=baseline, precision=precision, sort=sort, delta=delta, reference=ref,
                 losses=losses, negligible=negligible, older=older, per_user=per_user, test=test,
                 correction=correction, alpha=alpha, ties=ties, ci=ci, n_resamples=n_resamples,
                 vs_reference=vs_reference)


# ---------------------------------------------------------------------------- rendering


def _core(cell: Cell, precision: int, pm: str) -> str:
    if cell.n >= 2 and cell.std is not None:
        return f"{cell.mean:.{precision}f} {pm} {cell.std:.{precision}f}"
    return f"{cell.mean:.{precision}f}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def delta_text(c: Cell) -> str:
    """A cell's Δ: ``+1.2%``, or with its interval ``+1.2% [+0.4, +2.0]`` (percent)."""
    if c.delta is None:
        return ""
    if c.ci is None:
        return _pct(c.delta)
    return f"{_pct(c.delta)} [{c.ci[0] * 100:+.1f}, {c.ci[1] * 100:+.1f}]"


def _delta_text(c: Cell) -> str:
    """:func:`delta_text` as the table cells show it after the value: `` (+1.2%)``."""
    return f" ({delta_text(c)})" if c.delta is not None else ""


def below(table: Table) -> list[str]:
    """What a rendered table prints under itself, after its own footnotes: the published
    rows' source, then the test, correction, alpha and n of its marks."""
    return ([table.reference_note] if table.reference_note else []) + list(table.test_notes)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*|`"})


def md_escape(text: str) -> str:
    """A name as literal Markdown text: ``0.1*ncl_kmeans`` must not start an emphasis,
    a ``|`` must not end the cell (``_`` inside a word is literal on GitHub already)."""
    return text.translate(_MD_SPECIAL)


def to_markdown(table: Table) -> str:
    """GitHub markdown in the notebook's style: ``**0.1901**`` best, ``<u>0.1889</u>`` second.
    Reference rows are italic and marked †, with their source as a footnote under the table."""
    marks, footnotes = note_marks(table) if table.footnotes else ({}, [])
    notes = table.has_notes and not table.footnotes  # once: it looks at every row
    head = ["model", *table.headers] + (["note"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for i, row in enumerate(table.rows):
        cells = []
        for m in table.metrics:
            c = row.cells[m]
            if row.kind == "summary":
                cells.append(_pct(c.delta) if c.delta is not None else "")
                continue
            if c.mean is None:
                cells.append(c.status or "")
                continue
            text = _core(c, table.precision, "±")
            if c.rank:
                text = f"**{text}**" if c.rank == "best" else f"<u>{text}</u>" if c.rank == "second" else text
            if c.sig:
                text += c.sig.replace("*", "\\*")
            if c.tie:
                text += TIE_MARK
            text += _delta_text(c)
            cells.append(text)
        label = md_escape(row.label)
        label = f"*{label}*" if row.kind == "reference" else label
        if i in marks:
            label += " " + marks[i]
        if notes:
            cells.append(md_escape("; ".join(row.flags)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    after = [md_escape(f) for f in footnotes + below(table)]
    if after:  # one paragraph, a line each (a trailing backslash is a Markdown line break)
        lines += ["", *(f"{line}\\" for line in after[:-1]), after[-1]]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "≡": r"$\equiv$", "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$", "†": r"$^{\dagger}$",
                  "≈": r"$\approx$", "α": r"$\alpha$", "≤": r"$\leq$", "–": "--", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular: ``\\textbf`` best, ``\\underline`` second, ``$^{*}$`` significance."""
    marks, footnotes = note_marks(table) if table.footnotes else ({}, [])
    notes = table.has_notes and not table.footnotes  # once: it looks at every row
    ncols = 1 + len(table.metrics) + (1 if notes else 0)
    spec = "l" + "c" * len(table.metrics) + ("l" if notes else "")
    head = ["model", *table.headers] + (["note"] if notes else [])
    out = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    prev = None
    for i, row in enumerate(table.rows):
        if prev is not None and (prev == "reference") != (row.kind == "reference") or (row.kind == "summary" and prev != "summary"):
            out.append(r"\midrule")
        prev = row.kind
        cells = []
        for m in table.metrics:
            c = row.cells[m]
            if row.kind == "summary":
                cells.append(latex_escape(_pct(c.delta)) if c.delta is not None else "")
                continue
            if c.mean is None:
                cells.append(rf"\textit{{{latex_escape(c.status)}}}" if c.status else "")
                continue
            text = _core(c, table.precision, r"$\pm$")
            text = rf"\textbf{{{text}}}" if c.rank == "best" else rf"\underline{{{text}}}" if c.rank == "second" else text
            if c.sig or c.tie:
                text += "$^{" + c.sig + (r"\approx" if c.tie else "") + "}$"
            text += latex_escape(_delta_text(c))
            cells.append(text)
        label = latex_escape(row.label) + (f"$^{{{marks[i].translate(_PLAIN_DIGITS)}}}$" if i in marks else "")
        if row.kind == "reference":
            label = rf"\textit{{{label}}}"
        parts = [label, *cells] + ([latex_escape("; ".join(row.flags))] if notes else [])
        assert len(parts) == ncols
        out.append(" & ".join(parts) + r" \\")
    out.append(r"\bottomrule")
    for line in footnotes + below(table):  # under the rule, across
        mark, _, text = line.partition(" ")
        mark = f"$^{{{mark.translate(_PLAIN_DIGITS)}}}$" if mark[0] in _SUPERSCRIPT_DIGITS else latex_escape(mark)
        out.append(rf"\multicolumn{{{ncols}}}{{l}}{{\footnotesize {mark} {latex_escape(text)}}} \\")
    out.append(r"\end{tabular}")
    return "\n".join(out) + "\n"


def to_frame(table: Table, marks: bool = False) -> pd.DataFrame:
    """The table as data (full precision): one line per row, summary left out. With
    ``marks``, each metric's decisions too: ``_rank`` (best, second or empty, as the
    rendered table bolds and underlines) and ``_sig`` (the significance mark)."""
    import pandas as pd

    records = []
    with_delta = {m for m in table.metrics for r in table.rows if r.kind != "summary" and r.cells[m].delta is not None}
    with_ci = {m for m in table.metrics for r in table.rows if r.kind != "summary" and r.cells[m].ci is not None}
    with_tie = {m for m in table.metrics for r in table.rows if r.kind != "summary" and r.cells[m].tie is not None}
    for row in table.rows:
        if row.kind == "summary":
            continue
        rec = {"model": row.name, "kind": row.kind, "n": row.n, "status": row.status or ""}
        for m in table.metrics:
            c = row.cells[m]
            rec[m] = c.mean
            rec[f"{m}_std"] = c.std
            rec[f"{m}_p"] = c.p
            rec[f"{m}_p_adj"] = c.p_adjusted
            if m in with_delta:
                rec[f"{m}_delta"] = c.delta
            if m in with_ci:
                rec[f"{m}_ci_low"], rec[f"{m}_ci_high"] = c.ci if c.ci is not None else (None, None)
            if m in with_tie:
                rec[f"{m}_tie"] = c.tie
            if marks:
                rec[f"{m}_rank"] = c.rank
                rec[f"{m}_sig"] = c.sig
        rec["note"] = "; ".join(row.flags)
        records.append(rec)
    return pd.DataFrame(records)


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    to_frame(table).to_csv(buf, index=False, float_format="%.17g")
    return buf.getvalue()


_SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_SUPERSCRIPT = str.maketrans("0123456789", _SUPERSCRIPT_DIGITS)
_PLAIN_DIGITS = str.maketrans(_SUPERSCRIPT_DIGITS, "0123456789")
# The notebook's column names: r10 n10 r20 n20 r50 n50.
SHORT_NAMES = {"recall": "r", "ndcg": "n", "precision": "p", "hit": "h"}


def short_header(metric: str) -> str:
    """``recall@10`` -> ``r10``, as the notebook heads its columns; others unchanged."""
    kind, at, k = metric.partition("@")
    return f"{SHORT_NAMES[kind]}{k}" if at and kind in SHORT_NAMES else metric


def note_marks(table: Table) -> tuple[dict[int, str], list[str]]:
    """Notes as marks: ``{row index: "¹,²"}`` and the footnotes, one per distinct note
    text (rows identical to the same row share one). A note column wraps into many
    lines on a terminal and takes the width the numbers need."""
    mark_of: dict[str, str] = {}
    marks: dict[int, str] = {}
    for i, row in enumerate(table.rows):
        own = []
        for flag in row.flags:
            if flag not in mark_of:
                mark_of[flag] = str(len(mark_of) + 1).translate(_SUPERSCRIPT)
            own.append(list(mark_of).index(flag))
        if own:
            marks[i] = ",".join(mark_of[list(mark_of)[j]] for j in sorted(own))
    return marks, [f"{m} {text}" for text, m in mark_of.items()]


def _has_decoration(table: Table) -> bool:
    return any(c.delta is not None or (c.n >= 2 and c.std is not None)
               for r in table.rows if r.kind != "summary" for c in r.cells.values())


def to_rich(table: Table, metrics: list[str] | None = None, *, short: bool = False, decorate: bool = True,
            marks: dict[int, str] | None = None, fold: bool = False, title: bool = True):
    """A rich Table for the terminal: bold best, underlined second, dim status cells,
    reference rows italic with †. ``metrics``: the columns (default all), ``short``:
    notebook headers (r10), ``decorate=False`` leaves out ± std and per-cell Δ,
    ``marks``: note marks by row index (:func:`note_marks`; None: a note column).
    Names and headers never wrap; ``fold`` lets them break (last resort, never cut)."""
    from rich.table import Table as RichTable
    from rich.text import Text

    metrics = table.metrics if metrics is None else metrics
    show_title = title and table.baseline
    rt = RichTable(show_lines=False, title=f"baseline: {table.baseline}" if show_title else None)
    rt.add_column("model", no_wrap=not fold, overflow="fold")
    for m in metrics:
        rt.add_column(short_header(m) if short or table.short_headers else m, justify="right", no_wrap=not fold,
                      overflow="fold")
    notes = marks is None and table.has_notes
    if notes:
        rt.add_column("note", style="yellow")
    for i, row in enumerate(table.rows):
        cells = []
        for m in metrics:
            c = row.cells[m]
            if row.kind == "summary":
                cells.append(Text(_pct(c.delta) if c.delta is not None else "", style="cyan"))
                continue
            if c.mean is None:
                cells.append(Text(c.status or "", style="dim"))
                continue
            style = "bold" if c.rank == "best" else "underline" if c.rank == "second" else ""
            core = _core(c, table.precision, "±") if decorate else f"{c.mean:.{table.precision}f}"
            t = Text(core, style=style)
            if c.sig:
                t.append(c.sig, style="green")
            if c.tie:
                t.append(TIE_MARK, style="green")
            if decorate and c.delta is not None:
                t.append(_delta_text(c), style="cyan")
            cells.append(t)
        label = Text(row.label, style="italic" if row.kind == "reference" else "bold" if row.kind == "baseline" else "")
        if marks and i in marks:
            label.append(" " + marks[i], style="yellow")
        rt.add_row(label, *cells, *(["; ".join(row.flags)] if notes else []))
    return rt


def _chunks(items: list, parts: int) -> list[list]:
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def rich_layout(table: Table, console, width: int | None) -> tuple[list, list[str]]:
    """The rich tables and footnote lines of ``table`` for a console ``width`` columns
    wide (None: unbounded, as for a pipe). Layouts are tried from the fullest down,
    the first that fits is taken, so nothing is ever cut with "…":

    1. every metric, full headers, ``mean ± std`` and Δ in the cells;
    2. the notebook's headers (r10, n10, ...);
    3. the metrics split into two or three tables stacked, cells as in 1;
    4. one table without ± std and per-cell Δ (a footnote says so), then split into
       2, 3, ... tables;
    5. one metric per table with names allowed to break (only when the name column
       alone is wider than the terminal).

    Notes are marks on the row names with footnotes under the table (a note column
    would wrap into many lines)."""
    marks, notes = note_marks(table)
    notes += below(table)
    metrics = table.metrics
    decorated = _has_decoration(table)
    candidates: list[tuple[list[list[str]], bool, bool]] = [([metrics], False, True), ([metrics], True, True)]
    if decorated:
        candidates += [(_chunks(metrics, t), True, True) for t in (2, 3) if t < len(metrics)]
    candidates += [(_chunks(metrics, t), True, False) for t in range(1, len(metrics) + 1)]

    def build(groups, short, decorate, fold=False):
        return [to_rich(table, g, short=short, decorate=decorate, marks=marks, fold=fold, title=i == 0)
                for i, g in enumerate(groups)]

    if width is None:
        return build(*candidates[0]), notes
    for groups, short, decorate in candidates:
        tables = build(groups, short, decorate)
        if all(fits(console, t, width) for t in tables):
            break
    else:
        groups, short, decorate = [[m] for m in metrics], True, False
        tables = build(groups, short, decorate, fold=True)
    if decorated and not decorate:
        notes.append(f"± std and per-cell Δ left out to fit {width} columns (a wider terminal or --md shows them)")
    return tables, notes


def print_rich(table: Table, console, width: int | None = None) -> None:
    """Print ``table`` on a rich console ``width`` columns wide (None: as wide as it
    needs, for a pipe or a file: nothing there is ever truncated or wrapped)."""
    from rich.text import Text

    tables, notes = rich_layout(table, console, width)
    print_whole(console, tables, [Text(line, style="italic" if line.startswith(REFERENCE_MARK) else "yellow")
                                  for line in notes], width)


def fits(console, renderable, width: int) -> bool:
    """Whether ``renderable`` takes at most ``width`` columns without wrapping a cell."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1_000_000), renderable).maximum <= width


def print_whole(console, tables: list, lines: list, width: int | None) -> None:
    """Print tables at their natural width (capped at ``width`` when given) and text
    lines unwrapped (the terminal wraps them; rich would cut them in a file). On a pipe
    (``width`` None) the console is widened for the call: rich caps every print at the
    console's width, 80 columns when it cannot ask a terminal."""
    from rich.measure import Measurement

    wide = console.options.update_width(1_000_000)
    natural = [Measurement.get(console, wide, t).maximum for t in tables]
    before = console.width
    if width is None:
        console.width = max([before, *natural])
    try:
        for t, w in zip(tables, natural):
            console.print(t, width=min(w, width) if width else w)
        for line in lines:
            console.print(line, soft_wrap=True)
    finally:
        console.width = before


def terminal_width(console) -> int | None:
    """The width to fit: the terminal's, or ``COLUMNS`` when set; None for a pipe
    (rich would otherwise assume 80 columns and cut names in a file)."""
    import os

    if console.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return console.width
    return None


def render(table: Table, fmt: str) -> str:
    """Text of the table in ``md``, ``latex``, ``csv`` or ``rich`` (plain text of the rich table)."""
    if fmt == "md":
        return to_markdown(table)
    if fmt == "latex":
        return to_latex(table)
    if fmt == "csv":
        return to_csv(table)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_rich(table, console, 200)
    return console.file.getvalue()

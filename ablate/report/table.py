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

Renderers only format; they never decide a mark.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ablate.errors import UsageError
from ablate.report import stats
from ablate.report.frame import ExperimentFrame

if TYPE_CHECKING:
    import pandas as pd  # imported where used: a Markdown table never needs it

DEFAULT_METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
# RecBole metrics where smaller is better; everything else (recall, ndcg, mrr, hit, ...) is larger-better.
LOWER_IS_BETTER = {"averagepopularity", "giniindex", "mae", "rmse", "logloss"}
# Loss terms that are meant to be small (weight decay); never flagged as negligible.
REGULARISERS = {"reg", "reg_loss", "l2", "emb_loss"}
NEGLIGIBLE = 0.01


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    rank: str = ""  # "best" | "second" | ""
    sig: str = ""  # "*" | "**" | ""
    p: float | None = None
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
            return f"{self.name} (ref)"
        return f"{self.name} (n={self.n})" if self.n >= 2 else self.name


@dataclass
class Table:
    metrics: list[str]
    rows: list[Row]
    precision: int = 4
    baseline: str | None = None

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
          older: dict[int, tuple[str, str]] | None = None) -> Table:
    """Decide every mark of the table. ``losses`` (run id -> epoch loss dicts) enables the
    negligible-term flag; ``reference`` (index name, metric columns) adds published rows;
    ``older`` (run id -> (trained by, current), :func:`ablate.report.frame.older_implementations`)
    flags rows whose numbers older code computed."""
    metrics = [m.lower() for m in (metrics or DEFAULT_METRICS)]
    if precision < 0 or precision > 10:
        raise UsageError(f"--precision must be between 0 and 10, got {precision}")
    have = set(frame.metrics)
    if have:
        missing = [m for m in metrics if m not in have]
        if len(missing) == len(metrics):
            raise UsageError(f"none of the metrics {', '.join(missing)} was recorded (have: {', '.join(sorted(have))})")
    if baseline is not None and baseline not in frame.rows:
        raise UsageError(f"--baseline {baseline!r} is not a row of this table (rows: {', '.join(frame.rows[:10])})")
    if baseline is None:
        baseline = next((r for r in frame.rows if frame.role.get(r) == "baseline"), None)
    if sort is not None and sort.lower() not in metrics:
        raise UsageError(f"--sort {sort!r} is not one of the shown metrics ({', '.join(metrics)})")

    # Column by column over all rows at once (numpy), then one pass that makes the cells:
    # per-cell pandas lookups and per-row t-tests cost seconds on 10,000 runs.
    n_rows = len(frame.rows)
    ns = frame.counts.tolist()
    base_at = frame.rows.index(baseline) if baseline in frame.rows else None
    test = base_at is not None and ns[base_at] >= 2
    means, stds, pvals, sigs, shown = {}, {}, {}, {}, {}
    for m in metrics:
        means[m] = _floats(frame.column(m, "means"))
        stds[m] = _floats(frame.column(m, "stds"))
        shown[m] = [None if v is None else float(_fmt(v, precision)) for v in means[m]]  # compared as printed
        p = np.full(n_rows, np.nan)
        if test and m in have:
            wide = frame.seed_matrix(m)
            p = stats.paired_pvalues(wide, wide[base_at])
            p[base_at] = np.nan
            p[frame.counts < 2] = np.nan
        pvals[m], sigs[m] = _floats(p), stats.marks(p)
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
                row.cells[m] = Cell(mean=mean, std=stds[m][i], n=n, p=pvals[m][i], sig=sigs[m][i],
                                    status="n/a" if mean is None else None)
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
                if delta and c.mean is not None and b.mean:
                    c.delta = c.mean / b.mean - 1
    for m in metrics:
        _rank(rows, m, shown[m])
    if sort is not None:
        key = sort.lower()
        lower = key.split("@")[0] in LOWER_IS_BETTER
        rows.sort(key=lambda r: (r.cells[key].mean is None,
                                 0.0 if r.cells[key].mean is None else (r.cells[key].mean if lower else -r.cells[key].mean)))
    if base_row is not None and not delta:
        summary = _best_variant_delta(rows, base_row, metrics, precision)
        if summary is not None:
            rows.append(summary)
    if reference is not None and not reference.empty:
        rows = _reference_rows(reference, metrics) + rows
    return Table(metrics=metrics, rows=rows, precision=precision, baseline=baseline)


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
        vals = [(r.cells[m].mean, r) for r in variants if r.cells[m].mean is not None]
        b = base.cells[m].mean
        if not vals or not b:
            out.cells[m] = Cell(status="")
            continue
        best = min(vals, key=lambda t: t[0])[0] if lower else max(vals, key=lambda t: t[0])[0]
        out.cells[m] = Cell(delta=best / b - 1)
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


def load_reference(path: Path) -> pd.DataFrame:
    """Published numbers from a YAML or CSV file: index = row name, columns = metrics.

    YAML: either ``{LightGCN: {recall@20: 0.1830, ...}, ...}`` or a list of mappings with
    a ``name`` (or ``model``) key. CSV: a ``name`` or ``model`` column, else the first.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--reference {path}: no such file")
    try:
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
            key = next((c for c in df.columns if str(c).lower() in ("name", "model")), df.columns[0])
            df = df.set_index(key)
        else:
            from ablate.spec import load_yaml

            data = load_yaml(p.read_text(encoding="utf-8"), p)
            if isinstance(data, dict):
                data = [{"name": k, **(v or {})} for k, v in data.items()]
            if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
                raise UsageError(f"--reference {path}: expected a mapping name -> metrics or a list of rows")
            records = []
            for d in data:
                name = d.get("name", d.get("model"))
                if name is None:
                    raise UsageError(f"--reference {path}: a row has no name")
                records.append({"name": str(name), **{k: v for k, v in d.items() if k not in ("name", "model")}})
            df = pd.DataFrame(records).set_index("name")
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas/yaml errors become one line
        raise UsageError(f"--reference {path}: {str(err).splitlines()[0]}") from None
    df.columns = [str(c).lower() for c in df.columns]
    try:
        return df.apply(pd.to_numeric)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--reference {path}: non-numeric value ({err})") from None


# ---------------------------------------------------------------------------- rendering


def _core(cell: Cell, precision: int, pm: str) -> str:
    if cell.n >= 2 and cell.std is not None:
        return f"{cell.mean:.{precision}f} {pm} {cell.std:.{precision}f}"
    return f"{cell.mean:.{precision}f}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def to_markdown(table: Table) -> str:
    """GitHub markdown in the notebook's style: ``**0.1901**`` best, ``<u>0.1889</u>`` second."""
    notes = table.has_notes  # once: it looks at every row
    head = ["model", *table.metrics] + (["note"] if notes else [])
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in table.rows:
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
            if c.delta is not None:
                text += f" ({_pct(c.delta)})"
            cells.append(text)
        label = f"*{row.label}*" if row.kind == "reference" else row.label
        if notes:
            cells.append("; ".join(row.flags))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "≡": r"$\equiv$", "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular: ``\\textbf`` best, ``\\underline`` second, ``$^{*}$`` significance."""
    notes = table.has_notes  # once: it looks at every row
    ncols = 1 + len(table.metrics) + (1 if notes else 0)
    spec = "l" + "c" * len(table.metrics) + ("l" if notes else "")
    head = ["model", *table.metrics] + (["note"] if notes else [])
    out = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    prev = None
    for row in table.rows:
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
            if c.sig:
                text += f"$^{{{c.sig}}}$"
            if c.delta is not None:
                text += f" ({latex_escape(_pct(c.delta))})"
            cells.append(text)
        label = latex_escape(row.label)
        if row.kind == "reference":
            label = rf"\textit{{{label}}}"
        parts = [label, *cells] + ([latex_escape("; ".join(row.flags))] if notes else [])
        assert len(parts) == ncols
        out.append(" & ".join(parts) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def to_frame(table: Table) -> pd.DataFrame:
    """The table as data (full precision, no marks): one line per row, summary left out."""
    import pandas as pd

    records = []
    with_delta = {m for m in table.metrics for r in table.rows if r.kind != "summary" and r.cells[m].delta is not None}
    for row in table.rows:
        if row.kind == "summary":
            continue
        rec = {"model": row.name, "kind": row.kind, "n": row.n, "status": row.status or ""}
        for m in table.metrics:
            c = row.cells[m]
            rec[m] = c.mean
            rec[f"{m}_std"] = c.std
            rec[f"{m}_p"] = c.p
            if m in with_delta:
                rec[f"{m}_delta"] = c.delta
        rec["note"] = "; ".join(row.flags)
        records.append(rec)
    return pd.DataFrame(records)


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    to_frame(table).to_csv(buf, index=False, float_format="%.17g")
    return buf.getvalue()


def to_rich(table: Table):
    """A rich Table for the terminal: bold best, underlined second, dim status cells."""
    from rich.table import Table as RichTable
    from rich.text import Text

    rt = RichTable(show_lines=False, title=f"baseline: {table.baseline}" if table.baseline else None)
    rt.add_column("model")
    for m in table.metrics:
        rt.add_column(m, justify="right")
    notes = table.has_notes  # once: it looks at every row
    if notes:
        rt.add_column("note", style="yellow")
    for row in table.rows:
        cells = []
        for m in table.metrics:
            c = row.cells[m]
            if row.kind == "summary":
                cells.append(Text(_pct(c.delta) if c.delta is not None else "", style="cyan"))
                continue
            if c.mean is None:
                cells.append(Text(c.status or "", style="dim"))
                continue
            style = "bold" if c.rank == "best" else "underline" if c.rank == "second" else ""
            t = Text(_core(c, table.precision, "±"), style=style)
            if c.sig:
                t.append(c.sig, style="green")
            if c.delta is not None:
                t.append(f" ({_pct(c.delta)})", style="cyan")
            cells.append(t)
        label = Text(row.label, style="italic" if row.kind == "reference" else "bold" if row.kind == "baseline" else "")
        rt.add_row(label, *cells, *(["; ".join(row.flags)] if notes else []))
    return rt


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
    console.print(to_rich(table))
    return console.file.getvalue()

"""``ablate table [SPEC|NAME...]``: the comparison table of an experiment, from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, OverrideOpt, parse_overrides
from ablate.errors import UsageError

TargetsArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Spec files or stored experiment names (default: the most recently updated).", show_default=False),
]


def _split_metrics(items: list[str] | None) -> list[str] | None:
    if not items:
        return None
    out = [m.strip() for item in items for m in item.replace(",", " ").split() if m.strip()]
    return out or None


@app.command("table")
def table_cmd(
    targets: TargetsArg = None,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    baseline: Annotated[Optional[str], typer.Option(help="Row to compare against (default: the first declared baseline).")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option("--metrics", "-m", help="Columns, e.g. recall@20,ndcg@20 (default: recall/ndcg @10,20,50).")] = None,
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    precision: Annotated[int, typer.Option(help="Decimals shown; marks compare the shown values.")] = 4,
    sort: Annotated[Optional[str], typer.Option(help="Order rows by this metric (best first) instead of as declared.")] = None,
    delta: Annotated[bool, typer.Option("--delta", help="Relative change vs the baseline in every row.")] = False,
    reference: Annotated[Optional[Path], typer.Option(help="Published numbers shown on top as reference rows (†, never ranked): YAML with source: (paper, table), split: test, rows: {Name: {recall@10: 0.1876, ...}}; or a CSV with a name column.")] = None,
    vs_reference: Annotated[bool, typer.Option("--vs-reference", help="With --reference: each row's distance from the reference row of the same name (value / published - 1) in every cell.")] = False,
    short: Annotated[bool, typer.Option("--short", help="The notebook's column names: r10 n10 r20 n20 r50 n50.")] = False,
    footnotes: Annotated[bool, typer.Option("--footnotes", help="--md/--latex: notes as marks on the names with footnotes under the table, instead of a note column (the terminal always does this).")] = False,
    negligible: Annotated[float, typer.Option(help="Flag added loss terms below this fraction of the main loss.")] = 0.01,
    md: Annotated[bool, typer.Option("--md", help="GitHub markdown.")] = False,
    latex: Annotated[bool, typer.Option("--latex", help="LaTeX booktabs tabular.")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="CSV (full precision; p-values, and interval ends with --ci, as columns).")] = False,
    top: Annotated[Optional[int], typer.Option("--top", help="A search (ablate search): its K best trials with their parameters.")] = None,
    test: Annotated[str, typer.Option("--test", help="Significance vs the baseline: auto (user-t where runs kept per-user values, else seeds), user-t, wilcoxon, randomization, or seeds.")] = "auto",
    correction: Annotated[str, typer.Option("--correction", help="Over every row x column tested: holm, bonferroni or none.")] = "holm",
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level after the correction (* marks).")] = 0.05,
    ties: Annotated[bool, typer.Option("--ties", help="Mark (≈) rows whose difference from the column's best is not significant.")] = False,
    ci: Annotated[bool, typer.Option("--ci", help="Each row's Δ vs the baseline with a 95% paired bootstrap interval over users.")] = False,
    resamples: Annotated[int, typer.Option("--resamples", help="Sign flips of the randomization test and resamples of --ci.")] = 10_000,
) -> None:
    """Render the comparison table: best bold, second underlined, mean ± std over seeds, flags."""
    chosen = [f for f, on in (("md", md), ("latex", latex), ("csv", csv)) if on]
    if len(chosen) > 1:
        raise UsageError("choose one of --md, --latex, --csv")
    fmt = chosen[0] if chosen else "rich"
    from ablate import api

    if top is not None:
        if top < 1 or len(targets or []) != 1 or fmt == "latex":
            raise UsageError("--top K (K >= 1) takes one search spec or experiment, as text, --md or --csv")
        typer.echo(api.top(targets[0], top, db=db, overrides=parse_overrides(override), fmt=fmt), nl=False)
        return
    table = api.comparison(targets, db=db, overrides=parse_overrides(override), metrics=_split_metrics(metrics),
                           split=split, baseline=baseline, precision=precision, sort=sort, delta=delta,
                           reference=reference, negligible=negligible, test=test, correction=correction, alpha=alpha,
                           ties=ties, ci=ci, n_resamples=resamples, vs_reference=vs_reference)
    table.short_headers, table.footnotes = short, footnotes
    from ablate.report.table import print_rich, render, terminal_width

    if fmt != "rich":
        typer.echo(render(table, fmt), nl=False)
        return
    from rich.console import Console

    console = Console()
    print_rich(table, console, terminal_width(console))

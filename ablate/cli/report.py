"""``ablate report [SPEC|NAME...] -o report.html``: one self-contained page to share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, parse_overrides
from ablate.cli.table import TargetsArg, _split_metrics


@app.command("report")
def report_cmd(
    targets: TargetsArg = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    db: DbOpt = DB_DEFAULT,
    override: Annotated[Optional[list[str]], typer.Option("--override", help="key=value the spec was run with (-o is the output here, as for ablate plot).", show_default=False)] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Row to compare against (default: the first declared baseline).")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option("--metrics", "-m", help="Table columns, e.g. recall@20,ndcg@20 (default: recall/ndcg @10,20,50).")] = None,
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    precision: Annotated[int, typer.Option(help="Decimals shown; marks compare the shown values.")] = 4,
    reference: Annotated[Optional[Path], typer.Option(help="Published numbers shown on top as reference rows (as for ablate table).")] = None,
    negligible: Annotated[float, typer.Option(help="Flag added loss terms below this fraction of the main loss.")] = 0.01,
    y: Annotated[Optional[str], typer.Option(help="Metric of the plots along the grid (default: recall@20 when recorded).")] = None,
    test: Annotated[str, typer.Option("--test", help="As for ablate table: auto, user-t, wilcoxon, randomization or seeds.")] = "auto",
    correction: Annotated[str, typer.Option("--correction", help="holm, bonferroni or none.")] = "holm",
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level after the correction.")] = 0.05,
    ties: Annotated[bool, typer.Option("--ties", help="Mark rows not significantly different from the column's best.")] = False,
    ci: Annotated[bool, typer.Option("--ci/--no-ci", help="Each row's Δ with its 95% paired bootstrap interval.")] = True,
) -> None:
    """Write one HTML file (no network needed to open it): the table with its marks, a
    plot per grid axis, every run's curves and config diff, failures and code versions."""
    from ablate import api

    path = api.report(targets, out, db=db, overrides=parse_overrides(override), metrics=_split_metrics(metrics),
                      split=split, baseline=baseline, precision=precision, reference=reference, negligible=negligible,
                      y=y, test=test, correction=correction, alpha=alpha, ties=ties, ci=ci)
    typer.echo(f"wrote {path}")

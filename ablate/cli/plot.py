"""``ablate plot``: a metric along a swept parameter, or per-epoch curves of some runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, parse_overrides
from ablate.errors import UsageError


@app.command("plot")
def plot_cmd(
    targets: Annotated[Optional[list[str]], typer.Argument(help="Spec files / experiment names; with --curves, run ids.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("plot.png"),
    x: Annotated[Optional[str], typer.Option(help="Parameter on the x axis (grid point or config key), e.g. k2.")] = None,
    y: Annotated[str, typer.Option(help="Metric on the y axis.")] = "recall@20",
    hue: Annotated[str, typer.Option(help="One line per value of: variant, row, model, or a parameter.")] = "variant",
    split: Annotated[str, typer.Option(help="test or valid.")] = "test",
    curves: Annotated[bool, typer.Option("--curves", help="Plot per-epoch loss terms and valid score of the given run ids.")] = False,
    db: DbOpt = DB_DEFAULT,
    override: Annotated[Optional[list[str]], typer.Option("--override", help="key=value the spec was run with.", show_default=False)] = None,
    logx: Annotated[Optional[bool], typer.Option("--logx/--linx", help="Log or linear x axis (default: log when the swept values span two orders of magnitude).", show_default=False)] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Row drawn as the reference line (default: the table's, the first declared baseline).")] = None,
    search: Annotated[bool, typer.Option("--search", help="A search (ablate search): optimisation history and each parameter's effect.")] = False,
) -> None:
    """Write a PNG: --x/--y over an experiment (mean ± std over seeds, the baseline as a
    reference line), or --curves of runs (one colour per run in every panel)."""
    from ablate import api

    if search:
        if len(targets or []) != 1:
            raise UsageError("--search takes one search spec or experiment")
        typer.echo(f"wrote {api.search_plot(targets[0], out, db=db, overrides=parse_overrides(override))}")
        return
    if curves:
        try:
            ids = [int(t) for t in targets or []]
        except ValueError:
            raise UsageError("--curves expects run ids") from None
        path = api.curves_plot(ids, out, db=db)
    else:
        if not x:
            raise UsageError("--x is required (or use --curves ID...)")
        path = api.sweep_plot(targets, x, out, db=db, y=y, hue=hue, split=split, overrides=parse_overrides(override),
                              logx=logx, baseline=baseline)
    typer.echo(f"wrote {path}")

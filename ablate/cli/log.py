"""``ablate log ID``: the tail of a run's own log file (RecBole's output for that run)."""

from __future__ import annotations

from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt
from ablate.cli.show import get_run_or_fail, tail
from ablate.cli.table import open_store
from ablate.errors import UsageError


@app.command("log")
def log_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.", show_default=False)],
    db: DbOpt = DB_DEFAULT,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines from the end (0: the whole log).")] = 50,
) -> None:
    """Print the last lines of a run's log."""
    store = open_store(db)
    run = get_run_or_fail(store, run_id)
    if not run.log_path:
        raise UsageError(f"run {run_id} has no log yet (status {run.status})")
    out = tail(run.log_path, lines if lines > 0 else 10**9)
    if out is None:
        raise UsageError(f"run {run_id}: log file {run.log_path} is gone")
    for line in out:
        typer.echo(line)

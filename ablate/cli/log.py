"""``ablate log ID``: the tail of a run's own log file (RecBole's output for that run)."""

from __future__ import annotations

from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt


@app.command("log")
def log_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id.", show_default=False)],
    db: DbOpt = DB_DEFAULT,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines from the end (0: the whole log).")] = 50,
) -> None:
    """Print the last lines of a run's log."""
    from ablate import api

    for line in api.log(run_id, db=db, lines=lines):
        typer.echo(line)

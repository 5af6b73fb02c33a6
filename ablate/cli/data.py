"""``ablate data fetch|where|list``: the datasets a spec can name without a ``data_path``.

Specs name a dataset and leave out where it lives; these commands put RecBole's atomic
files into the data home (``$ABLATE_DATA``, default ``~/.cache/ablate/data``) and say
what is there. The work is in :mod:`ablate.data`; this file only translates options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app

data_app = typer.Typer(
    no_args_is_help=True,
    help="Datasets: fetch RecBole's atomic files into the data home, and list what is there.",
)
app.add_typer(data_app, name="data")

DataPathOpt = Annotated[
    Optional[Path],
    typer.Option("--data-path", "-d", help="Folder that holds the dataset folders (default: the data home).",
                 show_default=False),
]


@data_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="RecBole dataset name, e.g. ml-1m.", show_default=False)],
    data_path: DataPathOpt = None,
    url: Annotated[Optional[str], typer.Option(
        help="Archive to download instead of RecBole's (a mirror, or file:///path/ml-1m.zip).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Download again even if the dataset is there.")] = False,
) -> None:
    """Download RecBole's atomic files of a dataset into the data home (or --data-path)."""
    from ablate import data

    target, fetched = data.fetch(name, data_path, url=url, force=force)
    if fetched:
        typer.echo(f"{name}: fetched into {target}")
    else:
        typer.echo(f"{name}: already in {target} (--force fetches it again)")


@data_app.command("where")
def where_cmd() -> None:
    """Print the data home: where specs without a data_path find their datasets."""
    from ablate import data

    typer.echo(f"{data.home()}  ({data.home_origin()})")


@data_app.command("list")
def list_cmd(data_path: DataPathOpt = None) -> None:
    """List the datasets in the data home (or --data-path) and those bundled with RecBole."""
    from ablate import data

    folder = data_path.expanduser().absolute() if data_path else data.home()
    places = [(folder, "")] + [(data.bundled(), "  (bundled with RecBole)")]
    for place, note in places:
        found = data.local_datasets(place)
        if not found and not note:
            typer.echo(f"{place}: no datasets (ablate data fetch ml-1m)")
        for name, columns in found:
            cols = ", ".join(columns) if columns else "?"
            typer.echo(f"{name}\t{place / name}\t[{cols}]{note}")

"""``ablate collect SPEC``: write what a spec's Slurm jobs left on shared storage into the store.

Slurm jobs never write the store (see :mod:`ablate.executors.slurm`); this command is
the coordinator when ``ablate run --executor slurm --no-wait`` has returned, or from
another login node. It is idempotent: collecting twice writes nothing new. Runs whose job
ended without a result become ``interrupted`` (``timeout`` after a Slurm TIMEOUT), and the
next ``ablate run`` submits them again.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, OverrideOpt, SpecArg, parse_overrides


@app.command("collect")
def collect_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Keep collecting until no Slurm job of the spec is running.")] = False,
    every: Annotated[float, typer.Option("--every", help="Seconds between collections with --wait.")] = 30.0,
    force: Annotated[bool, typer.Option("--force", help="Also collect runs that a live 'ablate run' is waiting on.")] = False,
) -> int:
    """Collect the results of a spec's Slurm jobs into the store (safe to repeat)."""
    from rich.console import Console

    from ablate import api

    got = api.collect(spec_path, db=db, overrides=parse_overrides(override), wait=wait, every=every, force=force)
    counts, name, summary = got.counts, got.experiment, got.summary
    console = Console()
    console.print(f"{name}: collected {summary.line()}; now "
                  + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), highlight=False)
    if counts.get("interrupted") or counts.get("timeout"):
        console.print("interrupted runs run again with: ablate run " + str(spec_path), highlight=False)
    return 0

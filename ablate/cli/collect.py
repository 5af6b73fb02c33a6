"""``ablate collect SPEC``: write what a spec's Slurm jobs left on shared storage into the store.

Slurm jobs never write the store (see :mod:`ablate.executors.slurm`); this command is
the coordinator when ``ablate run --executor slurm --no-wait`` has returned, or from
another login node. It is idempotent: collecting twice writes nothing new. Runs whose job
ended without a result become ``interrupted`` (``timeout`` after a Slurm TIMEOUT), and the
next ``ablate run`` submits them again.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, OverrideOpt, SpecArg, parse_overrides
from ablate.errors import UsageError


def spec_run_ids(db: str, spec_path, override) -> tuple:
    """(store, experiment name, run ids) of a spec already run into ``db``."""
    from ablate import plan, spec as spec_mod
    from ablate.cli.table import open_store

    spec = spec_mod.load_spec(spec_path)
    name = plan.experiment_name(spec, parse_overrides(override))
    store = open_store(db)
    exp = store.experiment(name)
    if exp is None:
        raise UsageError(f"experiment {name!r} is not in {db} (run `ablate run {spec_path}` first)")
    return store, name, store.experiment_run_ids(exp.id)


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

    from ablate.executors.slurm import collect_runs

    if every <= 0:
        raise UsageError("--every must be positive")
    store, name, run_ids = spec_run_ids(db, spec_path, override)
    console = Console()
    while True:
        summary = collect_runs(store, run_ids, include_live=force)
        if not wait or not summary.running:
            break
        time.sleep(every)
    counts = store.counts(run_ids)
    console.print(f"{name}: collected {summary.line()}; now "
                  + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), highlight=False)
    if counts.get("interrupted") or counts.get("timeout"):
        console.print("interrupted runs run again with: ablate run " + str(spec_path), highlight=False)
    return 0

"""``ablate rerun ID`` / ``ablate rerun --failed SPEC``: run stored runs again.

A rerun of one id is a *new* run row (``rerun_of`` = the original) with exactly the
stored config, kept out of every experiment's membership so tables keep showing the
original; it answers "does this number reproduce?" by comparing every stored metric.
``--seed`` / ``-o`` make a deliberate variation (a new config, hence a new key).
``--failed`` instead requeues the failed/nan/oom/timeout/interrupted/stalled runs of a spec in
place, so the table fills in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import (
    CpuOpt, DB_DEFAULT, DbOpt, GpusOpt, JobsOpt, OverrideOpt, PerGpuOpt, WorkdirOpt, local_options, parse_overrides,
)
from ablate.errors import UsageError


@app.command("rerun")
def rerun_cmd(
    run_id: Annotated[Optional[int], typer.Argument(help="Id of the stored run to run again.", show_default=False)] = None,
    failed: Annotated[Optional[Path], typer.Option("--failed", help="Retry every failed/nan/oom/timeout/interrupted/stalled run of this spec.")] = None,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Run with this seed instead (a deliberate variation).")] = None,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = "1",
    jobs: JobsOpt = None,
    cpu: CpuOpt = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds after which a run is stopped.")] = None,
    workdir: WorkdirOpt = None,
) -> int:
    """Run a stored run again and say whether its metrics reproduce (exit 1 when they do not)."""
    from ablate import api

    if (run_id is None) == (failed is None):
        raise UsageError("give either a run id or --failed SPEC")
    on = local_options(gpus, per_gpu, jobs, cpu)
    overrides = parse_overrides(override)
    if failed is not None:
        result = api.rerun_failed(failed, db=db, overrides=overrides, on=on, timeout=timeout, workdir=workdir)
        if not result.run_ids:
            typer.echo(f"{result.experiment}: no failed, nan, oom, timeout, interrupted or stalled runs")
            return 0
        typer.echo(f"{result.experiment}: retrying {len(result.run_ids)} run(s): {', '.join(map(str, result.run_ids))}")
        parts = ", ".join(f"{n} {s}" for s, n in sorted(result.summary.finished.items())) or "nothing"
        typer.echo(f"finished: {parts}")
        return result.exit_code

    result = api.rerun(run_id, db=db, overrides=overrides, seed=seed, on=on, timeout=timeout, workdir=workdir)
    original, new = result.original, result.new
    varied = ", ".join(f"{k}={v}" for k, v in result.variation.items() if k != "seed") or "seed"
    typer.echo(f"run {new.id}: rerun of {original.id} ({original.name}, seed {new.seed})"
               + (f", varied: {varied}" if result.variation else ""))
    if result.summary.interrupted:
        return 130
    if new.status != "done":
        typer.echo(f"run {new.id} ended {new.status}" + (f": {new.error}" if new.error else ""))
        return 1
    if result.variation:
        typer.echo(f"variation done: {result.compared} metrics compared with run {original.id}, "
                   f"max |diff| {result.max_diff:.6g}")
        return 0
    if result.reproduced is None:
        typer.echo(f"run {original.id} has no stored metrics ({original.status}); nothing to compare")
        return 1
    if result.reproduced:
        typer.echo(f"reproduced: all {result.compared} metrics (valid and test) equal run {original.id} exactly "
                   "(max |diff| 0)")
        return 0
    typer.echo(f"NOT reproduced: {len(result.differ)} of {result.compared} metrics differ from run {original.id}, "
               f"max |diff| {result.max_diff:.6g}")
    from ablate import versions

    if not versions.is_current(original.versions, original.model):
        typer.echo(f"  run {original.id} was trained by {versions.recorded(original.versions, original.model)}; "
                   f"this checkout runs {versions.label(original.model)}: its numbers changed on purpose")
    for line in result.differ[:12]:
        typer.echo(f"  {line}")
    return 1

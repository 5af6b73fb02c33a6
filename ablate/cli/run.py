"""``ablate run SPEC``: expand a spec, store its runs, execute the ones not done yet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import (
    ArrayParallelismOpt, CpuOpt, DB_DEFAULT, DbOpt, ExecutorOpt, GpusOpt, GpusPerJobOpt, JobsOpt, OverrideOpt,
    PartitionOpt, PerGpuOpt, SlurmFolderOpt, SpecArg, TimeOpt, WarmOpt, WorkdirOpt, parse_duration, parse_log_every,
    parse_overrides, where_options,
)


def print_plan(plan, console) -> None:
    """The expanded runs; with ``--fuse``, the group each pending run trains in."""
    from rich.markup import escape
    from rich.table import Table

    fused = plan.fuse > 1
    in_groups = sum(1 for r in plan.rows if r.group)
    title = f"{len(plan.rows)} runs" + (f", {in_groups} in {plan.groups} fused group(s)" if fused else "")
    table = Table(title=title, show_lines=False)
    for col in ("#", "name", "variant", "model", "seed", "key", "stored") + (("group",) if fused else ()):
        table.add_column(col)
    for i, r in enumerate(plan.rows):
        row = [str(i + 1), escape(r.name), escape(r.variant), r.model, str(r.seed), r.key, "done" if r.stored else ""]
        table.add_row(*row, *((r.group or "",) if fused else ()))
    console.print(table)


@app.command("run")
def run_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = "1",
    jobs: JobsOpt = None,
    cpu: CpuOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded plan and exit.")] = False,
    fetch: Annotated[bool, typer.Option("--fetch", help="First download the datasets the spec names that are not there (ablate data fetch).")] = False,
    force: Annotated[bool, typer.Option(help="Run every run again, even those already done.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds after which a run is stopped (status timeout).")] = None,
    stall_timeout: Annotated[str, typer.Option("--stall-timeout", help="Stop a run that reports no progress (no batch, epoch or phase) for this long, e.g. 90s, 30m, 2h, or off (status stalled; its worker is replaced). Local runs.")] = "30m",
    log_every: Annotated[str, typer.Option("--log-every", help="When stdout is not a terminal: a progress line per run every N epochs and/or every so long, whichever comes first, e.g. 5ep, 60s, 10ep,2m, or off.")] = "10ep,60s",
    workdir: WorkdirOpt = None,
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep each run's best checkpoint.")] = False,
    warm: WarmOpt = True,
    executor_kind: ExecutorOpt = "local",
    partition: PartitionOpt = None,
    gpus_per_job: GpusPerJobOpt = 1,
    time_limit: TimeOpt = "4:00:00",
    array_parallelism: ArrayParallelismOpt = None,
    slurm_folder: SlurmFolderOpt = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Slurm: submit and return; ablate collect gathers results later.")] = False,
    mps: Annotated[bool, typer.Option("--mps", help="Runs packed on a GPU share it through a private CUDA MPS daemon, so their kernels run at once.")] = False,
    fuse: Annotated[str, typer.Option("--fuse", help="Train runs of one graph backbone and data side by side in one worker, one wide propagation for all: auto (up to 8), off, or a group size. Each run keeps its own numbers.")] = "off",
) -> int:
    """Run an experiment spec: every variant x grid point x seed not already in the store."""
    from rich.console import Console

    from ablate import api

    console = Console()
    overrides = parse_overrides(override)
    if dry_run:
        print_plan(api.plan(spec_path, overrides=overrides, db=db, fuse=fuse, fetch=fetch, console=console), console)
        return 0
    on = where_options(executor_kind, gpus=gpus, per_gpu=per_gpu, jobs=jobs, cpu=cpu, warm=warm, mps=mps,
                       partition=partition, gpus_per_job=gpus_per_job, time=time_limit,
                       array_parallelism=array_parallelism, slurm_folder=slurm_folder, wait=not no_wait)
    epochs, seconds = parse_log_every(log_every)
    result = api.run(spec_path, db=db, overrides=overrides, on=on, fuse=fuse, force=force, timeout=timeout,
                     stall_timeout=parse_duration(stall_timeout, "--stall-timeout", allow_off=True),
                     workdir=workdir, keep_checkpoints=keep_checkpoints, fetch=fetch, console=console,
                     log_every=(epochs, seconds))
    if executor_kind == "slurm" and no_wait and result.pending:
        _print_submitted(result, spec_path, db, console)
    elif result.summary is not None:
        _print_summary(result, console, slurm=executor_kind == "slurm")
    return result.exit_code


def _print_summary(result, console, slurm: bool = False) -> None:
    from ablate.progress import duration

    summary = result.summary
    parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.finished.items())) or "nothing"
    console.print(f"finished: {parts}" + (f"; {summary.elsewhere} still running elsewhere" if summary.elsewhere else "")
                  + (f"; {summary.retried} retried after out-of-memory" if summary.retried else "")
                  + ("" if slurm else f" ({duration(result.seconds)})"), soft_wrap=True)
    if summary.interrupted:
        console.print("interrupted: its jobs were cancelled; unfinished runs run again next time" if slurm else
                      "interrupted: unfinished runs are marked interrupted and run again next time")


def _print_submitted(result, spec_path, db, console) -> None:
    for err in result.refused:
        console.print(f"[red]not submitted:[/red] {err}", highlight=False)
    jobs = sorted(set(result.submitted.values()), key=str)
    span = ", ".join(jobs) if len(jobs) <= 4 else f"{jobs[0]} … {jobs[-1]}"
    console.print(f"submitted {len(result.submitted)} run(s) as {len(jobs)} job(s) [{span}] on {result.cluster}; "
                  f"files in {result.folder}")
    console.print(f"collect results with: ablate collect {spec_path}" + ("" if str(db) == "results.db" else f" --db {db}"))

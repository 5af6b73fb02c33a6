"""``ablate search SPEC``: tune a row of a spec with Optuna, every trial a stored run.

See :mod:`ablate.search`. The trials run on the same slots as ``ablate run`` (``--gpus``,
``--per-gpu``, ``--jobs``), several at once; run the same command again after a crash and
the search goes on from what is stored. ``--rerun-best --seeds 2021,2022`` trains the best
trial again with other seeds (ordinary runs, so asked twice they are found done), grouped
with it in the experiment ``<name>.search.best``: ``ablate table <name>.search.best``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import (
    ArrayParallelismOpt, CpuOpt, DB_DEFAULT, DbOpt, ExecutorOpt, GpusOpt, GpusPerJobOpt, JobsOpt, OverrideOpt,
    PartitionOpt, PerGpuOpt, SlurmFolderOpt, SpecArg, TimeOpt, WorkdirOpt, local_options, parse_overrides,
    where_options,
)
from ablate.errors import UsageError


@app.command("search")
def search_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    trials: Annotated[Optional[int], typer.Option(help="Distinct configurations to try in all (default: the spec's search.trials).")] = None,
    gpus: GpusOpt = None,
    per_gpu: PerGpuOpt = "1",
    jobs: JobsOpt = None,
    cpu: CpuOpt = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds after which a trial is stopped (status timeout).")] = None,
    workdir: WorkdirOpt = None,
    rerun_best: Annotated[bool, typer.Option("--rerun-best", help="Train the best trial again with --seeds instead of searching.")] = False,
    seeds: Annotated[Optional[str], typer.Option(help="With --rerun-best: seeds, e.g. 2021,2022.")] = None,
    executor_kind: ExecutorOpt = "local",
    partition: PartitionOpt = None,
    gpus_per_job: GpusPerJobOpt = 1,
    time_limit: TimeOpt = "4:00:00",
    array_parallelism: ArrayParallelismOpt = None,
    slurm_folder: SlurmFolderOpt = None,
) -> int:
    """Tune a spec's search: block with Optuna (TPE by default), pruning on per-epoch valid scores."""
    from ablate import api

    overrides = parse_overrides(override)
    api.search_plan(spec_path, overrides=overrides)  # a bad search block is reported before any option
    if seeds is not None and not rerun_best:
        raise UsageError("--seeds goes with --rerun-best")
    if rerun_best:
        return _rerun_best(spec_path, db, overrides, local_options(gpus, per_gpu, jobs, cpu), timeout, workdir, seeds)
    on = where_options(executor_kind, gpus=gpus, per_gpu=per_gpu, jobs=jobs, cpu=cpu, partition=partition,
                       gpus_per_job=gpus_per_job, time=time_limit, array_parallelism=array_parallelism,
                       slurm_folder=slurm_folder)

    def announce(found, planner, slots):
        stored = len(planner.runs) - len(planner.pending) - len(planner.adopted)
        where = f"on {len(slots)} slot(s)" if executor_kind == "local" else "on Slurm"
        typer.echo(f"{found.name}: {planner.budget} trials of {found.row} by valid {found.metric} ({found.direction}), "
                   f"{stored} stored, {len(planner.pending)} to finish"
                   + (f", {len(planner.adopted)} still training in Slurm jobs (adopted)" if planner.adopted else "")
                   + f", {where}")

    from ablate.progress import duration

    result = api.search(spec_path, db=db, overrides=overrides, trials=trials, on=on, timeout=timeout, workdir=workdir,
                        announce=announce)
    counts: dict[str, int] = {}
    for t in result.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    typer.echo(f"{result.name}: {len(result.trials)} trials ({parts}); {result.answered} answered from the store"
               + ("; the space holds no more new configurations" if result.exhausted else "")
               + f" ({duration(result.seconds)})")
    b = result.best
    if b is not None:
        from ablate.report.search_table import _show

        shown = ", ".join(f"{k}={_show(v) if not isinstance(v, str) else v}" for k, v in b.params.items())
        typer.echo(f"best: trial {b.number} (run {b.run_id}) valid {result.metric} {b.value:.4f}: {shown}")
    if result.exit_code == 130:
        typer.echo("interrupted: unfinished trials are asked again by the next ablate search")
    return result.exit_code


def _rerun_best(spec_path, db, overrides, on, timeout, workdir, seeds: str | None) -> int:
    from ablate import api

    if not seeds:
        raise UsageError("--rerun-best needs --seeds, e.g. --seeds 2021,2022")
    try:
        wanted = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds expects integers like 2021,2022, got {seeds!r}") from None
    if not wanted:
        raise UsageError(f"--seeds expects integers like 2021,2022, got {seeds!r}")

    def announce(name, trial, run_seeds, pending):
        typer.echo(f"{name}: trial {trial.number} (run {trial.run_id}) with seeds {', '.join(str(s) for s in run_seeds)}; "
                   f"{pending} to run")

    result = api.search_best(spec_path, wanted, db=db, overrides=overrides, on=on, timeout=timeout, workdir=workdir,
                             announce=announce)
    if result.summary is not None and result.summary.interrupted:
        return 130
    metric = result.metric
    for r in result.runs:
        typer.echo(f"  seed {r.seed}: valid {metric} {r.metric('valid', metric):.4f}, "
                   f"test {metric} {r.metric('test', metric):.4f} (run {r.id})")
    typer.echo(f"table: ablate table {result.experiment}")
    return result.exit_code

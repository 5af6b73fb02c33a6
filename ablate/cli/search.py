"""``ablate search SPEC``: tune a row of a spec with Optuna, every trial a stored run.

See :mod:`ablate.search`. The trials run on the same slots as ``ablate run`` (``--gpus``,
``--per-gpu``, ``--jobs``), several at once; run the same command again after a crash and
the search goes on from what is stored. ``--rerun-best --seeds 2021,2022`` trains the best
trial again with other seeds (ordinary runs, so asked twice they are found done), grouped
with it in the experiment ``<name>.search.best``: ``ablate table <name>.search.best``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import CpuOpt, DB_DEFAULT, DbOpt, GpusOpt, JobsOpt, OverrideOpt, SpecArg, WorkdirOpt, parse_overrides
from ablate.errors import UsageError


@app.command("search")
def search_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    trials: Annotated[Optional[int], typer.Option(help="Distinct configurations to try in all (default: the spec's search.trials).")] = None,
    gpus: GpusOpt = None,
    per_gpu: Annotated[str, typer.Option("--per-gpu", help="Trials sharing one GPU.")] = "1",
    jobs: JobsOpt = None,
    cpu: CpuOpt = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds after which a trial is stopped (status timeout).")] = None,
    workdir: WorkdirOpt = None,
    rerun_best: Annotated[bool, typer.Option("--rerun-best", help="Train the best trial again with --seeds instead of searching.")] = False,
    seeds: Annotated[Optional[str], typer.Option(help="With --rerun-best: seeds, e.g. 2021,2022.")] = None,
) -> int:
    """Tune a spec's search: block with Optuna (TPE by default), pruning on per-epoch valid scores."""
    from ablate import search as search_mod, spec as spec_mod

    overrides = parse_overrides(override)
    spec = spec_mod.load_spec(spec_path)
    found = search_mod.prepare(spec, overrides)
    if trials is not None and trials < 1:
        raise UsageError("--trials must be at least 1")
    if seeds is not None and not rerun_best:
        raise UsageError("--seeds goes with --rerun-best")
    if per_gpu == "auto":
        raise UsageError("--per-gpu expects a number for ablate search")
    from ablate.cli.run import _slots, check_writable, workdir_for
    from ablate.store import Store

    store = Store(db)
    if rerun_best:
        return _rerun_best(store, found, seeds, dict(gpus=gpus, per_gpu=per_gpu, jobs=jobs, cpu=cpu, timeout=timeout,
                                                      workdir=workdir))
    slots, simulate = _slots(gpus, per_gpu, jobs, cpu)
    wd = workdir_for(store, workdir)
    check_writable(wd)
    budget = trials or found.block.trials
    planner = search_mod.StudyPlanner(store, found, budget)
    stored = len(planner.runs) - len(planner.pending)
    typer.echo(f"{found.name}: {budget} trials of {found.row} by valid {found.metric} ({found.direction}), "
               f"{stored} stored, {len(planner.pending)} to finish, on {len(slots)} slot(s)")
    return _search(store, found, planner, slots, simulate, wd, timeout)


def _search(store, found, planner, slots, simulate, wd, timeout) -> int:
    from ablate import scheduler, search as search_mod
    from ablate.executors.local import LocalExecutor
    from ablate.progress import SweepView, duration
    from ablate.store import make_owner

    executor = LocalExecutor(slots, cache=True, simulate=simulate)
    t0 = time.monotonic()
    try:
        with SweepView(len(planner.pending), {}) as view:
            planner.view = view
            summary = scheduler.Sweep(store, list(planner.pending), executor, make_owner(), wd, timeout=timeout, view=view,
                                      git=scheduler.git_commit(Path.cwd()), stall_timeout=scheduler.STALL_TIMEOUT,
                                      planner=planner).run()
    finally:
        executor.shutdown(kill=True)
    trials = search_mod.stored_trials(store, found.name, found.metric)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    typer.echo(f"{found.name}: {len(trials)} trials ({parts}); {planner.answered} answered from the store"
               + ("; the space holds no more new configurations" if planner.exhausted else "")
               + f" ({duration(time.monotonic() - t0)})")
    top = search_mod.best(trials, found.direction)
    if top:
        b = top[0]
        shown = ", ".join(f"{k}={search_mod._show(v) if not isinstance(v, str) else v}" for k, v in b.params.items())
        typer.echo(f"best: trial {b.number} (run {b.run_id}) valid {found.metric} {b.value:.4f}: {shown}")
    if summary.interrupted:
        typer.echo("interrupted: unfinished trials are asked again by the next ablate search")
        return 130
    return 0


def _rerun_best(store, found, seeds: str | None, run_opts: dict) -> int:
    """The best trial's config with other seeds: ordinary runs (found done when asked
    again), grouped with the best trial under one row in ``<name>.search.best``."""
    from ablate import search as search_mod
    from ablate.cli.rerun import execute

    if not seeds:
        raise UsageError("--rerun-best needs --seeds, e.g. --seeds 2021,2022")
    try:
        wanted = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds expects integers like 2021,2022, got {seeds!r}") from None
    if not wanted:
        raise UsageError(f"--seeds expects integers like 2021,2022, got {seeds!r}")
    top = search_mod.best(search_mod.stored_trials(store, found.name, found.metric), found.direction)
    if not top:
        raise UsageError(f"search {found.name!r} has no finished trial yet (run `ablate search` first)")
    b = top[0]
    runs = [found.run_for(b.params, position=0, seed=b.seed)]
    runs += [found.run_for(b.params, position=i, seed=s) for i, s in enumerate(wanted, 1) if s != b.seed]
    row = f"best_{found.row}"
    runs = [dataclasses.replace(r, name=row) for r in runs]
    name = found.name + search_mod.BEST_SUFFIX
    exp_id = store.sync_experiment(found.spec.model_copy(update={"name": name}), runs)
    ids = store.experiment_run_ids(exp_id)
    store.requeue(ids, retry=True)
    pending = [r.id for r in store.runs(ids, with_children=False) if r.status == "pending"]
    typer.echo(f"{name}: trial {b.number} (run {b.run_id}) with seeds {', '.join(str(r.seed) for r in runs)}; {len(pending)} to run")
    if pending:
        summary = execute(store, pending, **run_opts)
        if summary.interrupted:
            return 130
    done = [r for r in store.runs(ids) if r.status == "done"]
    for r in sorted(done, key=lambda r: r.seed):
        typer.echo(f"  seed {r.seed}: valid {found.metric} {r.metric('valid', found.metric):.4f}, "
                   f"test {found.metric} {r.metric('test', found.metric):.4f} (run {r.id})")
    typer.echo(f"table: ablate table {name}")
    return 0 if len(done) == len(ids) else 1

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
from ablate.cli.options import CpuOpt, DB_DEFAULT, DbOpt, GpusOpt, JobsOpt, OverrideOpt, WorkdirOpt, parse_overrides
from ablate.cli.table import open_store
from ablate.errors import UsageError


def execute(store, run_ids: list[int], *, gpus=None, per_gpu="1", jobs=None, cpu=False, timeout=None,
            workdir: Path | None = None, label: str = "rerun"):
    """Run ``run_ids`` (already pending) through the same machinery as ``ablate run``."""
    from ablate import scheduler
    from ablate.cli.run import _slots, workdir_for
    from ablate.executors.local import LocalExecutor
    from ablate.progress import SweepView
    from ablate.store import make_owner

    slots, simulate = _slots(gpus, per_gpu, jobs, cpu)
    executor = LocalExecutor(slots, cache=True, simulate=simulate)
    names = {r.id: r.name for r in store.runs(run_ids, with_children=False)}
    with SweepView(len(run_ids), names) as view:
        return scheduler.Sweep(store, run_ids, executor, make_owner(), workdir_for(store, workdir), timeout=timeout,
                               view=view, git=scheduler.git_commit(Path.cwd()), stall_timeout=scheduler.STALL_TIMEOUT).run()


def compare(original, new) -> tuple[int, float, list[str]]:
    """Metrics of two runs: (how many compared, max |diff|, names that differ or are missing)."""
    a = {(m.split, m.name): m.value for m in original.metrics}
    b = {(m.split, m.name): m.value for m in new.metrics}
    differ, worst = [], 0.0
    for k in sorted(a.keys() | b.keys()):
        if k not in a or k not in b:
            differ.append(f"{k[0]} {k[1]} (missing)")
            continue
        d = abs(a[k] - b[k])
        worst = max(worst, d)
        if a[k] != b[k]:
            differ.append(f"{k[0]} {k[1]} {a[k]:.6g} -> {b[k]:.6g}")
    return len(a.keys() & b.keys()), worst, differ


@app.command("rerun")
def rerun_cmd(
    run_id: Annotated[Optional[int], typer.Argument(help="Id of the stored run to run again.", show_default=False)] = None,
    failed: Annotated[Optional[Path], typer.Option("--failed", help="Retry every failed/nan/oom/timeout/interrupted/stalled run of this spec.")] = None,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Run with this seed instead (a deliberate variation).")] = None,
    gpus: GpusOpt = None,
    per_gpu: Annotated[str, typer.Option("--per-gpu", help="Runs sharing one GPU.")] = "1",
    jobs: JobsOpt = None,
    cpu: CpuOpt = False,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds after which a run is stopped.")] = None,
    workdir: WorkdirOpt = None,
) -> int:
    """Run a stored run again and say whether its metrics reproduce (exit 1 when they do not)."""
    if (run_id is None) == (failed is None):
        raise UsageError("give either a run id or --failed SPEC")
    store = open_store(db)
    overrides = parse_overrides(override)
    run_opts = dict(gpus=gpus, per_gpu=per_gpu, jobs=jobs, cpu=cpu, timeout=timeout, workdir=workdir)
    if failed is not None:
        return _rerun_failed(store, failed, overrides, run_opts)

    original = store.get_run(run_id)
    if original is None:
        raise UsageError(f"no run with id {run_id} in {db}")
    variation = bool(overrides) or (seed is not None and seed != original.seed)
    config, key = None, None
    if variation:
        from ablate import plan

        config = {**original.config, **overrides}
        if seed is not None:
            config["seed"] = seed
        plan.check_variation(original.model, config, overrides)
        key = plan.run_key(config)
    new_id = store.add_rerun(original.id, config=config, key=key, seed=seed)
    typer.echo(f"run {new_id}: rerun of {original.id} ({original.name}, seed {seed if seed is not None else original.seed})"
               + (f", varied: {', '.join(f'{k}={v}' for k, v in overrides.items()) or 'seed'}" if variation else ""))
    summary = execute(store, [new_id], **run_opts)
    new = store.get_run(new_id)
    if summary.interrupted:
        return 130
    if new.status != "done":
        typer.echo(f"run {new_id} ended {new.status}" + (f": {new.error}" if new.error else ""))
        return 1
    n, worst, differ = compare(original, new)
    if variation:
        typer.echo(f"variation done: {n} metrics compared with run {original.id}, max |diff| {worst:.6g}")
        return 0
    if not original.metrics:
        typer.echo(f"run {original.id} has no stored metrics ({original.status}); nothing to compare")
        return 1
    if not differ:
        typer.echo(f"reproduced: all {n} metrics (valid and test) equal run {original.id} exactly (max |diff| 0)")
        return 0
    typer.echo(f"NOT reproduced: {len(differ)} of {n} metrics differ from run {original.id}, max |diff| {worst:.6g}")
    from ablate import versions

    if not versions.is_current(original.versions, original.model):
        typer.echo(f"  run {original.id} was trained by {versions.recorded(original.versions, original.model)}; "
                   f"this checkout runs {versions.label(original.model)}: its numbers changed on purpose")
    for line in differ[:12]:
        typer.echo(f"  {line}")
    return 1


def _rerun_failed(store, spec_path: Path, overrides: dict, run_opts: dict) -> int:
    from ablate import plan, spec as spec_mod
    from ablate.store import RETRYABLE

    spec = spec_mod.load_spec(spec_path)
    name = plan.experiment_name(spec, overrides)
    exp = store.experiment(name)
    if exp is None:
        raise UsageError(f"experiment {name!r} (from {spec_path}) is not in {store.db}; run `ablate run {spec_path}` first")
    ids = store.experiment_run_ids(exp.id)
    retry = {x.value for x in RETRYABLE}
    failed_runs = [r for r in store.runs(ids, with_children=False) if r.status in retry]
    if not failed_runs:
        typer.echo(f"{name}: no failed, nan, oom, timeout, interrupted or stalled runs")
        return 0
    for r in failed_runs:  # a run stored before its values were checked would only fail again
        plan.check_stored(r.model, r.config, f"run {r.id} ({r.name})")
    todo = [r.id for r in failed_runs]
    store.requeue(todo, retry=True)
    typer.echo(f"{name}: retrying {len(todo)} run(s): {', '.join(map(str, todo))}")
    summary = execute(store, todo, **run_opts)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.finished.items())) or "nothing"
    typer.echo(f"finished: {parts}")
    if summary.interrupted:
        return 130
    return 0 if set(summary.finished) <= {"done"} else 1

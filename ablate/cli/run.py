"""``ablate run SPEC``: expand a spec, store its runs, execute the ones not done yet."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli._app import app
from ablate.cli.options import CpuOpt, DB_DEFAULT, DbOpt, GpusOpt, JobsOpt, OverrideOpt, SpecArg, WorkdirOpt, parse_overrides
from ablate.errors import UsageError


def workdir_for(store, workdir: Path | None) -> Path:
    """Run folders (logs, checkpoints) live next to a SQLite store, else in ./.ablate."""
    if workdir is not None:
        return workdir
    path = store.path if store is not None else None
    return (path.parent if path is not None else Path.cwd()) / ".ablate"


def print_plan(runs, done_keys: set[str], console, fuse: int = 1) -> None:
    """The expanded runs; with ``--fuse``, the group each pending run trains in (a group of
    one trains alone)."""
    from rich.markup import escape
    from rich.table import Table

    from ablate import fused
    from ablate.worker import DATA_KEYS

    pending = [(i, r.model, r.config) for i, r in enumerate(runs) if r.key not in done_keys]
    group_of = {}
    if fuse > 1:
        for g, members in enumerate((m for m in fused.groups(pending, fuse, DATA_KEYS) if len(m) > 1), 1):
            group_of.update({i: f"{g} ({len(members)})" for i in members})
    n_groups = len({v for v in group_of.values()})
    title = f"{len(runs)} runs" + (f", {len(group_of)} in {n_groups} fused group(s)" if fuse > 1 else "")
    table = Table(title=title, show_lines=False)
    for col in ("#", "name", "variant", "model", "seed", "key", "stored") + (("group",) if fuse > 1 else ()):
        table.add_column(col)
    for i, r in enumerate(runs):
        row = [str(i + 1), escape(r.name), escape(r.variant), r.model, str(r.seed), r.key, "done" if r.key in done_keys else ""]
        table.add_row(*row, *((group_of.get(i, ""),) if fuse > 1 else ()))
    console.print(table)


@app.command("run")
def run_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
    gpus: GpusOpt = None,
    per_gpu: Annotated[str, typer.Option("--per-gpu", help="Runs sharing one GPU: a number, or 'auto' (by measured memory).")] = "1",
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
    warm: Annotated[bool, typer.Option(help="Reuse worker processes and their parsed dataset across runs (--no-warm: a fresh process per run).")] = True,
    executor_kind: Annotated[str, typer.Option("--executor", help="Where runs execute: local, or slurm (job arrays through submitit).")] = "local",
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition (--executor slurm).")] = None,
    gpus_per_job: Annotated[int, typer.Option("--gpus-per-job", help="GPUs per Slurm job; --per-gpu runs share each (0: CPU jobs).")] = 1,
    time_limit: Annotated[str, typer.Option("--time", help="Slurm time limit per job, [D-]HH:MM:SS.")] = "4:00:00",
    array_parallelism: Annotated[Optional[int], typer.Option("--array-parallelism", help="Slurm jobs of the array running at once.")] = None,
    slurm_folder: Annotated[Optional[Path], typer.Option("--slurm-folder", help="Shared folder for job files and results (default: WORKDIR/slurm).")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Slurm: submit and return; ablate collect gathers results later.")] = False,
    mps: Annotated[bool, typer.Option("--mps", help="Runs packed on a GPU share it through a private CUDA MPS daemon, so their kernels run at once.")] = False,
    fuse: Annotated[str, typer.Option("--fuse", help="Train runs of one graph backbone and data side by side in one worker, one wide propagation for all: auto (up to 8), off, or a group size. Each run keeps its own numbers.")] = "off",
) -> int:
    """Run an experiment spec: every variant x grid point x seed not already in the store."""
    # Under --mps, workers must be spawned after the daemon is up (they inherit its folders).
    early = executor_kind == "local" and not dry_run and not mps
    executor = _early_executor(gpus, per_gpu, jobs, cpu, warm) if early else None
    daemon = None
    try:
        from rich.console import Console
        from rich.markup import escape

        from ablate import plan, spec as spec_mod
        from ablate.fused import parse_fuse

        fuse_size = parse_fuse(fuse)
        if fuse_size > 1 and executor_kind != "local":
            raise UsageError("--fuse is for runs on this machine (--executor local)")
        overrides = parse_overrides(override)
        spec = spec_mod.load_spec(spec_path)
        if fetch:  # where the plan would look for each dataset, then the usual plan
            from ablate import data

            for folder in data.fetch_missing(r.config for r in plan.expand(spec, overrides, check_files=False)):
                typer.echo(f"fetched {folder}")
        runs = plan.expand(spec, overrides)
        console = Console()
        if timeout is not None and timeout <= 0:
            raise UsageError("--timeout must be positive")
        stall = parse_duration(stall_timeout, "--stall-timeout", allow_off=True)
        log_epochs, log_seconds = parse_log_every(log_every)
        for a, b in plan.duplicates(runs):
            console.print(f"[yellow]warning:[/yellow] rows {escape(repr(a))} and {escape(repr(b))} resolve to the same config; they share one run")

        if dry_run:
            from ablate.store import Store

            done: set[str] = set()
            if Store_exists(db):
                store = Store(db, create=False)
                done = {r.key for r in store.runs(with_children=False) if r.status == "done" and r.rerun_of is None}
            print_plan(runs, done, console, fuse=fuse_size)
            return 0

        from ablate.executors.local import LocalExecutor

        if executor_kind not in ("local", "slurm"):
            raise UsageError(f"--executor expects local or slurm, got {executor_kind!r}")
        from ablate.executors import slurm

        if executor_kind == "slurm":  # bad Slurm options fail before anything is stored
            slurm.check_options(time_limit, per_gpu, gpus_per_job, array_parallelism)
        if executor is not None:
            slots = executor.slots
        else:
            slots, simulate = _slots(gpus, per_gpu, jobs, cpu)
            if executor_kind == "local":
                executor = LocalExecutor(slots, cache=warm, simulate=simulate)
        if mps:
            daemon = _mps_daemon(executor_kind, slots)
            _start(daemon)  # inside the try: Ctrl-C while it starts still quits it below
        if executor is not None:
            executor.prestart(min(len(slots), len(runs)))
            if daemon is not None:  # no run trains while a worker still loads its CUDA libraries
                executor.wait_ready()
        return _sweep(spec, spec_path, runs, overrides, db, slots, executor, executor_kind, console, per_gpu=per_gpu,
                      force=force, timeout=timeout, workdir=workdir, keep_checkpoints=keep_checkpoints, partition=partition,
                      gpus_per_job=gpus_per_job, time_limit=time_limit, array_parallelism=array_parallelism,
                      slurm_folder=slurm_folder, no_wait=no_wait, stall_timeout=stall,
                      log_every=(log_epochs, log_seconds), fuse=fuse_size, fuse_auto=fuse.strip().lower() == "auto")
    finally:
        if executor is not None:
            executor.shutdown(kill=True)  # no-op after a sweep; stops prestarted workers on an early exit
        if daemon is not None:  # after the workers, its clients, are gone
            daemon.stop()
            shutil.rmtree(daemon.folder, ignore_errors=True)


def _mps_daemon(executor_kind: str, slots):
    """ablate's own MPS daemon for this sweep, not started yet (see :mod:`ablate.executors.mps`)."""
    import tempfile

    from ablate.executors.mps import MPSDaemon

    if executor_kind != "local":
        raise UsageError("--mps is for runs on this machine's GPUs (--executor local)")
    if not any(s.gpu is not None for s in slots):
        raise UsageError("--mps needs GPUs, and these runs go to the CPU")
    return MPSDaemon(Path(tempfile.mkdtemp(prefix="ablate-mps-")))


def _start(daemon) -> None:
    from ablate.executors.mps import MPSError

    try:
        daemon.start()
    except MPSError as exc:
        raise UsageError(str(exc)) from None


def _early_executor(gpus, per_gpu, jobs, cpu, warm):
    """A local executor whose first worker is already starting, made before the spec is
    read: the worker's torch/RecBole imports (seconds) then overlap with parsing, planning
    and opening the store. Only where the slots are known without importing torch (CPU
    runs, and GPUs that nvidia-smi lists); None elsewhere, and on a bad option (reported
    in its usual place, after the spec's own errors)."""
    from ablate.executors.local import LocalExecutor
    from ablate.scheduler import countable_without_torch

    if not cpu and not countable_without_torch():
        return None  # counting GPUs imports torch: slots are made after the spec, as before
    try:
        slots, simulate = _slots(gpus, per_gpu, jobs, cpu)
    except UsageError:
        return None
    executor = LocalExecutor(slots, cache=warm, simulate=simulate)
    executor.prestart(1)
    return executor


def _sweep(spec, spec_path, runs, overrides, db, slots, executor, executor_kind, console, *, per_gpu, force, timeout,
           workdir, keep_checkpoints, partition, gpus_per_job, time_limit, array_parallelism, slurm_folder, no_wait,
           stall_timeout=None, log_every=(None, None), fuse: int = 1, fuse_auto: bool = False) -> int:
    """Store the plan, then execute what is pending on the chosen executor."""
    from ablate import plan, scheduler
    from ablate.executors import slurm
    from ablate.progress import SweepView, duration
    from ablate.store import Store, make_owner

    store = Store(db)
    spec_named = spec.model_copy(update={"name": plan.experiment_name(spec, overrides)})
    exp_id = store.sync_experiment(spec_named, runs)
    run_ids = store.experiment_run_ids(exp_id)
    slurm.collect_runs(store, run_ids)  # earlier Slurm jobs' results; ended jobs' runs are requeued below
    store.requeue(run_ids, force=force, retry=True)
    counts = store.counts(run_ids)
    pending = counts.get("pending", 0)
    console.print(  # plain text, one line however narrow the log (a name may hold brackets)
        f"{spec_named.name}: {len(run_ids)} runs, {counts.get('done', 0)} done, {pending} to run"
        + (f", {counts.get('running', 0)} running elsewhere" if counts.get("running") else "")
        + (f" on {len(slots)} slot(s) [{', '.join(sorted({s.device for s in slots}))}]" if executor_kind == "local" else " on Slurm"),
        markup=False, soft_wrap=True,
    )
    if pending == 0:
        return 0
    wd = workdir_for(store, workdir)
    check_writable(wd)
    names = {r.id: r.name for r in store.runs(run_ids, with_children=False)}
    if executor_kind == "slurm":
        return slurm.run_sweep(store, spec_path, run_ids, names, wd, console, partition=partition, gpus_per_job=gpus_per_job,
                               per_gpu=1 if per_gpu == "auto" else int(per_gpu), time=time_limit,
                               array_parallelism=array_parallelism, slurm_folder=slurm_folder, no_wait=no_wait,
                               timeout=timeout, keep_checkpoints=keep_checkpoints, pending=pending)
    auto = None
    if per_gpu == "auto" and any(s.gpu is not None for s in slots):
        from ablate.executors import packing

        auto = packing.AutoPack(packing.gpu_memory_mb(), hint_mb=packing.stored_peak_mb(store, run_ids))
    executor.auto = auto
    if auto is not None:
        for g in sorted({s.gpu for s in slots}, key=str):
            executor.grow(g)  # past runs of the same model and dataset already say how many fit
    if fuse > 1 and fuse_auto and any(s.gpu is not None for s in slots):
        fuse = _auto_fuse(store, run_ids, slots, fuse)
    git = scheduler.git_commit(Path(spec_path).resolve().parent)
    t0 = time.monotonic()
    with SweepView(pending, names, console, log_epochs=log_every[0], log_seconds=log_every[1]) as view:
        summary = scheduler.Sweep(store, run_ids, executor, make_owner(), wd, timeout=timeout, view=view,
                                  git=git, keep_checkpoints=keep_checkpoints, stall_timeout=stall_timeout,
                                  fuse=fuse).run()
    parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.finished.items())) or "nothing"
    console.print(f"finished: {parts}" + (f"; {summary.elsewhere} still running elsewhere" if summary.elsewhere else "")
                  + (f"; {summary.retried} retried after out-of-memory" if summary.retried else "")
                  + f" ({duration(time.monotonic() - t0)})", soft_wrap=True)
    if summary.interrupted:
        console.print("interrupted: unfinished runs are marked interrupted and run again next time")
        return 130
    return 0 if set(summary.finished) <= {"done"} else 1


def _auto_fuse(store, run_ids, slots, size: int) -> int:
    """``--fuse auto`` on GPUs: no larger than the smallest GPU holds, by the largest peak
    memory stored for past runs of these models and data (a fused member stores its
    group's peak, so the estimate only errs small). Unknown peaks keep ``size``; a group
    that runs out of memory is retried in groups half as large."""
    from ablate.executors import packing

    peak = packing.stored_peak_mb(store, run_ids)
    totals = packing.gpu_memory_mb()
    gpu_totals = [totals.get(str(s.gpu)) for s in slots if s.gpu is not None]
    if peak is None or not gpu_totals or None in gpu_totals:
        return size
    return packing.slots_for(min(gpu_totals), peak, cap=size, context_mb=0.0)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str, allow_off: bool = False) -> float | None:
    """Seconds from ``90``, ``90s``, ``30m``, ``1.5h`` or ``2d`` (None for ``off`` where allowed)."""
    value = text.strip().lower()
    if allow_off and value in ("off", "none", "0"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([smhd]?)", value)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{option} expects a duration such as 90s, 30m or 2h{', or off' if allow_off else ''}, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_log_every(text: str) -> tuple[int | None, float | None]:
    """``--log-every``: (epochs, seconds) from ``5ep``, ``60s``, ``10ep,2m`` or ``off``;
    a trigger not given is off."""
    if text.strip().lower() == "off":
        return None, None
    epochs = seconds = None
    for part in (p.strip().lower() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*(?:ep|epochs?)", part)
        if m and int(m.group(1)) > 0 and epochs is None:
            epochs = int(m.group(1))
            continue
        try:
            if seconds is not None:
                raise UsageError("")
            seconds = parse_duration(part, "--log-every")
        except UsageError:
            raise UsageError(f"--log-every expects epochs and/or a duration, e.g. 5ep, 60s or 10ep,2m, or off; got {text!r}") from None
    return epochs, seconds


def check_writable(folder: Path) -> None:
    """Fail before any run starts when run logs cannot be written (read-only, not a
    folder, disk full), instead of every run failing one by one."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ablate-probe-") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UsageError(f"--workdir {folder}: cannot write run logs there ({err.strerror or err})") from None


def Store_exists(db: str) -> bool:  # noqa: N802 - reads as a phrase at the call site
    from ablate.storefile import to_url

    url = to_url(db)
    if not url.startswith("sqlite:///"):
        return True
    return Path(url.split("sqlite:///", 1)[1]).is_file()


def _slots(gpus: str | None, per_gpu: str, jobs: int | None, cpu: bool):
    import os

    from ablate import scheduler

    simulate = os.environ.get("ABLATE_SIMULATE_GPUS") == "1"
    if per_gpu == "auto":
        n_per_gpu = 1  # refined by measured memory once runs report it
    else:
        try:
            n_per_gpu = int(per_gpu)
        except ValueError:
            raise UsageError(f"--per-gpu expects a number or 'auto', got {per_gpu!r}") from None
    wanted = None
    if gpus is not None:
        wanted = [g.strip() for g in gpus.split(",") if g.strip()]
        if not wanted:
            raise UsageError("--gpus expects ids like 0,1")
    available = [] if cpu else scheduler.visible_gpus()
    if cpu or (not available and not simulate):
        if wanted:
            raise UsageError(f"--gpus {gpus}: no GPU is visible here (use --jobs N for CPU runs)")
        wanted = []
        if jobs is None:  # one single-threaded run per core beat one run on all cores (bench/sweep.py, 2 cores)
            jobs = max(1, min(os.cpu_count() or 1, 4))
    slots = scheduler.make_slots(wanted, n_per_gpu, jobs, available, simulate=simulate)
    return slots, simulate

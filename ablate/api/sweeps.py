"""Running specs: ``run``, ``rerun``, ``search``, and the one place a sweep is wired.

Every way runs are trained (a spec, a rerun, retried failures, search trials, the best
trial with other seeds) ends in :func:`_execute` (this machine) or :func:`_on_slurm` (a
cluster): the executor, the live view and the scheduler's :class:`~ablate.scheduler.Sweep`
are put together there and nowhere else. The functions return results as data; progress
goes to ``console`` (a rich Console: a live view on a terminal, plain lines elsewhere,
including a Jupyter cell; ``Console(quiet=True)`` for none).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.api.options import DEFAULT_DB, Local, Slurm, Where
from ablate.errors import OptionError, UsageError
from ablate.scheduler import STALL_TIMEOUT, Summary

LOG_EVERY = (10, 60.0)  # plain progress lines: every 10 epochs or every minute


# ---------------------------------------------------------------------------- results


@dataclass
class SweepResult:
    """What a sweep did. ``exit_code``: 0 every run done, 1 some not, 130 interrupted."""

    experiment: str
    run_ids: list[int]
    counts: dict[str, int]  # statuses when the sweep started (after requeueing)
    summary: Summary | None = None  # None: nothing was pending
    seconds: float = 0.0
    submitted: dict[int, str] = field(default_factory=dict)  # Slurm without waiting: run id -> job id
    refused: list[str] = field(default_factory=list)  # Slurm without waiting: submissions Slurm refused
    folder: Path | None = None  # Slurm: the shared folder of the jobs' files
    cluster: str | None = None

    @property
    def pending(self) -> int:
        return self.counts.get("pending", 0)

    @property
    def exit_code(self) -> int:
        if self.summary is None:
            return 0 if (self.submitted or not self.refused) else 1
        if self.summary.interrupted:
            return 130
        return 0 if set(self.summary.finished) <= {"done"} else 1


@dataclass
class PlanRow:
    name: str
    variant: str
    model: str
    seed: int
    key: str
    stored: bool  # already done in the store
    group: str | None  # with fuse > 1: "2 (4)" = fused group 2, of 4 runs


@dataclass
class Plan:
    """``ablate run --dry-run``: the expanded runs, what is stored, the fused groups."""

    experiment: str
    rows: list[PlanRow]
    duplicates: list[tuple[str, str]]
    fuse: int

    @property
    def groups(self) -> int:
        return len({r.group for r in self.rows if r.group})


# ---------------------------------------------------------------------------- folders


def workdir_for(store, workdir: Path | None) -> Path:
    """Run folders (logs, checkpoints) live next to a SQLite store, else in ./.ablate."""
    if workdir is not None:
        return Path(workdir)
    path = store.path if store is not None else None
    return (path.parent if path is not None else Path.cwd()) / ".ablate"


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
        raise OptionError("workdir", f"cannot write run logs there ({err.strerror or err})", value=folder) from None


# ---------------------------------------------------------------------------- run a spec


def plan(spec, *, overrides: dict | None = None, db: str | None = DEFAULT_DB, fuse: str | int = "off",
         fetch: bool = False, console=None) -> Plan:
    """The runs ``run`` would store and train, without storing or training anything
    (``fetch``: first download the datasets the plan misses, as ``run`` does)."""
    from ablate import plan as plan_mod, sharing

    fuse_size = sharing.parse_fuse(fuse)
    spec_obj = _load(spec)
    if fetch:
        _fetch(spec_obj, overrides or {}, _console(console))
    runs = plan_mod.expand(spec_obj, overrides or {})
    done: set[str] = set()
    if db is not None:
        from ablate.storefile import store_exists

        if store_exists(db):
            from ablate.store import Store

            store = Store(db, create=False)
            done = {r.key for r in store.runs(with_children=False) if r.status == "done" and r.rerun_of is None}
    pending = [(i, r.model, r.config) for i, r in enumerate(runs) if r.key not in done]
    group_of: dict[int, str] = {}
    if fuse_size > 1:
        for g, members in enumerate((m for m in sharing.groups(pending, fuse_size) if len(m) > 1), 1):
            group_of.update({i: f"{g} ({len(members)})" for i in members})
    rows = [PlanRow(r.name, r.variant, r.model, r.seed, r.key, r.key in done, group_of.get(i)) for i, r in enumerate(runs)]
    return Plan(plan_mod.experiment_name(spec_obj, overrides or {}), rows, plan_mod.duplicates(runs), fuse_size)


def run(spec, *, db: str = DEFAULT_DB, overrides: dict | None = None, on: Where | None = None,
        fuse: str | int = "off", force: bool = False, timeout: float | None = None,
        stall_timeout: float | None = STALL_TIMEOUT, workdir: Path | None = None, keep_checkpoints: bool = False,
        fetch: bool = False, console=None, log_every: tuple[int | None, float | None] = LOG_EVERY) -> SweepResult:
    """Expand a spec, store its runs, and train every run not already done.

    ``spec``: a YAML path (or a parsed :class:`~ablate.spec.ExperimentSpec`);
    ``overrides``: ``{key: value}`` applied to every run (stored under its own experiment
    name); ``on``: :class:`Local` (default) or :class:`Slurm`; ``fuse``: ``"off"``,
    ``"auto"`` or a group size (runs of one graph backbone trained side by side, each
    with its own numbers); ``force``: train done runs again; ``timeout``: seconds per run;
    ``stall_timeout``: seconds without progress before a run is stopped (None: never).
    """
    from ablate import sharing

    on = on if on is not None else Local()
    console = _console(console)
    if timeout is not None and timeout <= 0:
        raise OptionError("timeout", "must be positive")
    fuse_size = sharing.parse_fuse(fuse)
    # A local worker starts importing torch and RecBole (seconds) now, while the spec is
    # read and planned and the store opened; under MPS workers must start after the daemon.
    executor = _early_executor(on) if isinstance(on, Local) and not on.mps else None
    daemon = None
    try:
        from ablate import plan as plan_mod

        spec_obj = _load(spec)
        overrides = dict(overrides or {})
        if fetch:
            _fetch(spec_obj, overrides, console)
        runs = plan_mod.expand(spec_obj, overrides)
        for a, b in plan_mod.duplicates(runs):
            console.print(f"warning: rows {a!r} and {b!r} resolve to the same config; they share one run",
                          markup=False, highlight=False)
        cluster = on.cluster() if isinstance(on, Slurm) else None  # before the store is touched
        slots = None
        if isinstance(on, Local):
            slots = executor.slots if executor is not None else on.slots()
            if on.mps:
                daemon = _mps_daemon(slots)
        store, name, run_ids, counts = _store_plan(db, spec_obj, runs, overrides, force)
        result = SweepResult(name, run_ids, counts, cluster=cluster)
        where = " on Slurm" if slots is None else f" on {len(slots)} slot(s) [{', '.join(sorted({s.device for s in slots}))}]"
        console.print(f"{name}: {len(run_ids)} runs, {counts.get('done', 0)} done, {result.pending} to run"
                      + (f", {counts.get('running', 0)} running elsewhere" if counts.get("running") else "") + where,
                      markup=False, soft_wrap=True, highlight=False)
        if result.pending == 0:
            return result
        wd = workdir_for(store, workdir)
        check_writable(wd)
        git = _git(spec_obj)
        if isinstance(on, Slurm):
            return _on_slurm(store, result, on, cluster, wd, git, console, timeout=timeout,
                             keep_checkpoints=keep_checkpoints, fuse=fuse_size)
        t0 = time.monotonic()
        result.summary = _execute(store, run_ids, on, workdir=wd, git=git, console=console, log_every=log_every,
                                  timeout=timeout, stall_timeout=stall_timeout, keep_checkpoints=keep_checkpoints,
                                  fuse=fuse_size, fuse_auto=str(fuse).strip().lower() == "auto", executor=executor,
                                  slots=slots, total=result.pending, daemon=daemon)
        result.seconds = time.monotonic() - t0
        executor = daemon = None  # both stopped by _execute
        return result
    finally:
        if executor is not None:
            executor.shutdown(kill=True)  # stops prestarted workers on an early exit
        if daemon is not None:
            _stop(daemon)


def _fetch(spec_obj, overrides: dict, console) -> None:
    """Download the datasets the plan would look for and not find (``ablate data fetch``)."""
    from ablate import data, plan as plan_mod

    for folder in data.fetch_missing(r.config for r in plan_mod.expand(spec_obj, overrides, check_files=False)):
        console.print(f"fetched {folder}", markup=False, highlight=False, soft_wrap=True)


def _load(spec):
    from ablate import spec as spec_mod

    if isinstance(spec, spec_mod.ExperimentSpec):
        return spec
    return spec_mod.load_spec(Path(spec))


def _console(console):
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def _git(spec_obj) -> str | None:
    from ablate.versions import git_commit

    where = Path(spec_obj.path).resolve().parent if spec_obj.path and spec_obj.path != "<string>" else Path.cwd()
    return git_commit(where)


def _store_plan(db: str, spec_obj, runs, overrides: dict, force: bool):
    """Store the planned runs under the experiment's name; requeue what must run again."""
    from ablate import plan as plan_mod
    from ablate.executors import slurm
    from ablate.store import Store

    store = Store(db)
    named = spec_obj.model_copy(update={"name": plan_mod.experiment_name(spec_obj, overrides)})
    exp_id = store.sync_experiment(named, runs)
    run_ids = store.experiment_run_ids(exp_id)
    slurm.collect_runs(store, run_ids)  # earlier Slurm jobs' results; ended jobs' runs are requeued below
    store.requeue(run_ids, force=force, retry=True)
    return store, named.name, run_ids, store.counts(run_ids)


def _early_executor(on: Local):
    """A local executor whose first worker is already starting, or None where the slots
    cannot be known without importing torch (or the options are wrong: reported later,
    in their usual place)."""
    from ablate.executors.local import LocalExecutor

    if not on.countable_now():
        return None
    try:
        slots = on.slots()
    except UsageError:
        return None
    executor = LocalExecutor(slots, cache=on.warm)
    executor.prestart(1)
    return executor


# ---------------------------------------------------------------------------- the wiring


def _execute(store, run_ids: list[int], on: Local, *, workdir: Path, git: str | None, console, log_every=LOG_EVERY,
             timeout: float | None = None, stall_timeout: float | None = STALL_TIMEOUT, keep_checkpoints: bool = False,
             fuse: int = 1, fuse_auto: bool = False, planner=None, executor=None, slots=None,
             total: int | None = None, daemon=None) -> Summary:
    """Train ``run_ids`` (pending) on this machine's slots: the one place where an
    executor, an MPS daemon, the live view and the scheduler's loop meet."""
    from ablate import scheduler
    from ablate.executors.local import LocalExecutor
    from ablate.progress import SweepView
    from ablate.store import make_owner

    try:
        if executor is None:
            slots = slots if slots is not None else on.slots()
            if on.mps and daemon is None:  # its workers are spawned after the daemon is up (they inherit its folders)
                daemon = _mps_daemon(slots)
            executor = LocalExecutor(slots, cache=on.warm)
        slots = executor.slots
        executor.prestart(min(len(slots), len(run_ids)))
        if daemon is not None:  # no run trains while a worker still loads its CUDA libraries
            executor.wait_ready()
        if on.per_gpu == "auto" and any(s.gpu is not None for s in slots):
            from ablate import devices
            from ablate.executors import packing

            executor.auto = packing.AutoPack(devices.gpu_memory_mb(), hint_mb=store.peak_mem_mb(run_ids))
            for g in sorted({s.gpu for s in slots}, key=str):
                executor.grow(g)  # past runs of the same model and dataset already say how many fit
        if fuse > 1 and fuse_auto and any(s.gpu is not None for s in slots):
            fuse = auto_fuse_size(store, run_ids, slots, fuse)
        names = {r.id: r.name for r in store.runs(run_ids, with_children=False)}
        with SweepView(total if total is not None else len(run_ids), names, console, log_epochs=log_every[0],
                       log_seconds=log_every[1]) as view:
            if planner is not None:
                planner.view = view
            return scheduler.Sweep(store, list(run_ids), executor, make_owner(), workdir, timeout=timeout, view=view,
                                   git=git, keep_checkpoints=keep_checkpoints, stall_timeout=stall_timeout, fuse=fuse,
                                   planner=planner).run()
    finally:
        if executor is not None:
            executor.shutdown(kill=True)  # no-op after a sweep; stops prestarted workers on an early exit
        if daemon is not None:  # after the workers, its clients, are gone
            _stop(daemon)


def _mps_daemon(slots):
    """ablate's own MPS daemon for a sweep on these slots, started (see :mod:`ablate.executors.mps`)."""
    import tempfile

    from ablate.executors.mps import MPSDaemon, MPSError

    if not any(s.gpu is not None for s in slots):
        raise OptionError("mps", "needs GPUs, and these runs go to the CPU")
    daemon = MPSDaemon(Path(tempfile.mkdtemp(prefix="ablate-mps-")))
    try:
        daemon.start()
    except MPSError as exc:
        _stop(daemon)
        raise UsageError(str(exc)) from None
    return daemon


def _stop(daemon) -> None:
    daemon.stop()
    shutil.rmtree(daemon.folder, ignore_errors=True)


def auto_fuse_size(store, run_ids: list[int], slots, size: int) -> int:
    """``fuse="auto"`` on GPUs: no larger than the smallest GPU holds, by the largest peak
    memory stored for past runs of these models and data (a fused member stores its
    group's peak, so the estimate only errs small). Unknown peaks keep ``size``; a group
    that runs out of memory is retried in groups half as large."""
    from ablate import devices
    from ablate.executors import packing

    peak = store.peak_mem_mb(run_ids)
    totals = devices.gpu_memory_mb()
    gpu_totals = [totals.get(str(s.gpu)) for s in slots if s.gpu is not None]
    if peak is None or not gpu_totals or None in gpu_totals:
        return size
    return packing.slots_for(min(gpu_totals), peak, cap=size, context_mb=0.0)


def _slurm_executor(store, on: Slurm, cluster: str, workdir: Path, git: str | None):
    from ablate.executors.slurm import SlurmExecutor, default_folder

    return SlurmExecutor(on.folder or default_folder(workdir), cluster=cluster, partition=on.partition,
                         gpus_per_job=on.gpus_per_job, per_gpu=on.per_gpu, time_min=on.minutes,
                         array_parallelism=on.array_parallelism, store=store, wait=on.wait, git=git)


def _on_slurm(store, result: SweepResult, on: Slurm, cluster: str, workdir: Path, git: str | None, console, *,
              timeout: float | None, keep_checkpoints: bool, fuse: int = 1) -> SweepResult:
    """Submit the pending runs (with ``fuse`` > 1, fused groups as one array element
    each) as one job array; then wait and collect (the scheduler's loop, unchanged), or
    with ``wait=False`` return at once."""
    from ablate.executors.slurm import submit_pending

    executor = _slurm_executor(store, on, cluster, workdir, git)
    if fuse > 1 and on.gpus_per_job > 0:  # a job cuts a group to what its GPU holds by this peak
        executor.peak_mb = store.peak_mem_mb(result.run_ids)
    result.folder = executor.folder
    if not on.wait:
        result.submitted, result.refused = submit_pending(store, result.run_ids, executor, workdir, keep_checkpoints,
                                                          fuse=fuse)
        return result
    t0 = time.monotonic()
    result.summary = _watch(store, result.run_ids, executor, workdir, git, console, total=result.pending,
                            timeout=timeout, keep_checkpoints=keep_checkpoints, fuse=fuse)
    result.seconds = time.monotonic() - t0
    return result


def _watch(store, run_ids: list[int], executor, workdir: Path, git: str | None, console, *, total: int,
           timeout: float | None = None, keep_checkpoints: bool = False, fuse: int = 1, planner=None,
           adopted=None) -> Summary:
    """The scheduler's loop over a Slurm executor: submit as slots allow, read the jobs'
    events files, answer search trials' verdicts, until every run ended."""
    from ablate import scheduler
    from ablate.progress import SweepView

    names = {r.id: r.name for r in store.runs(run_ids, with_children=False)}
    names.update({run.id: run.name for run, _ in adopted or []})
    with SweepView(total, names, console) as view:
        if planner is not None:
            planner.view = view
        return scheduler.Sweep(store, list(run_ids), executor, executor.owner, workdir, timeout=timeout, view=view,
                               git=git, keep_checkpoints=keep_checkpoints, fuse=fuse, planner=planner,
                               adopted=adopted).run()


# ---------------------------------------------------------------------------- reruns


@dataclass
class RerunResult:
    """A stored run trained again. ``reproduced``: every metric equal at full precision
    (None for a deliberate variation, or when there was nothing to compare)."""

    original: Any  # the stored run (ablate.store.Run)
    new: Any
    variation: dict[str, Any]
    summary: Summary
    compared: int = 0
    max_diff: float = 0.0
    differ: list[str] = field(default_factory=list)  # metrics that differ: "test recall@10 a -> b"
    per_user_differ: list[str] = field(default_factory=list)  # splits whose per-user values differ
    reproduced: bool | None = None

    @property
    def exit_code(self) -> int:
        if self.summary.interrupted:
            return 130
        if self.new.status != "done":
            return 1
        if self.variation:
            return 0
        return 0 if self.reproduced else 1


def compare(original, new) -> tuple[int, float, list[str]]:
    """Metrics of two runs at full precision (the unrounded means where both kept them):
    (how many compared, max |diff|, names that differ or are missing)."""
    both = {(m.split, m.name) for m in original.metrics if m.exact is not None} & {
        (m.split, m.name) for m in new.metrics if m.exact is not None}
    a = {(m.split, m.name): m.exact if (m.split, m.name) in both else m.value for m in original.metrics}
    b = {(m.split, m.name): m.exact if (m.split, m.name) in both else m.value for m in new.metrics}
    differ, worst = [], 0.0
    for k in sorted(a.keys() | b.keys()):
        if k not in a or k not in b:
            differ.append(f"{k[0]} {k[1]} (missing)")
            continue
        d = abs(a[k] - b[k])
        worst = max(worst, d)
        if a[k] != b[k]:
            differ.append(f"{k[0]} {k[1]} {a[k]!r} -> {b[k]!r}")
    return len(a.keys() & b.keys()), worst, differ


def rerun(run_id: int, *, db: str = DEFAULT_DB, overrides: dict | None = None, seed: int | None = None,
          on: Local | None = None, timeout: float | None = None, workdir: Path | None = None, console=None) -> RerunResult:
    """Train a stored run again as a new run (``rerun_of`` = the original, outside every
    experiment, so tables keep the original) and compare every metric. ``seed`` or
    ``overrides`` make a deliberate variation (a new config, hence a new key)."""
    from ablate.store import open_existing

    store = open_existing(db)
    overrides = dict(overrides or {})
    original = store.get_run(run_id)
    if original is None:
        raise UsageError(f"no run with id {run_id} in {db}")
    variation = dict(overrides)
    if seed is not None and seed != original.seed:
        variation["seed"] = seed
    config, key = None, None
    if variation:
        from ablate import plan as plan_mod

        config = {**original.config, **overrides}
        if seed is not None:
            config["seed"] = seed
        plan_mod.check_variation(original.model, config, overrides)
        key = plan_mod.run_key(config)
    new_id = store.add_rerun(original.id, config=config, key=key, seed=seed)
    summary = _train_stored(store, [new_id], on, timeout=timeout, workdir=workdir, console=console)
    new = store.get_run(new_id)
    result = RerunResult(original, new, variation, summary)
    if new.status == "done":
        result.compared, result.max_diff, result.differ = compare(original, new)
        result.per_user_differ = _per_user_differ(store, original.id, new.id)
        if not variation and original.metrics:
            result.reproduced = not result.differ and not result.per_user_differ
    return result


def _per_user_differ(store, a: int, b: int) -> list[str]:
    """Splits whose per-user values both runs kept and that are not equal value for value."""
    from ablate.peruser import decode

    out = []
    for split in ("valid", "test"):
        got = store.per_user([a, b], split)
        if len(got) == 2:
            x, y = decode(got[a]), decode(got[b])
            if not x.equals(y):
                n = len(set(x.users.tolist()) ^ set(y.users.tolist()))
                same_users = n == 0 and x.columns == y.columns
                diff = int((x.values != y.values).any(axis=1).sum()) if same_users else None
                out.append(f"{split} per-user values: " + (f"{diff} of {len(x)} users differ" if same_users
                                                            else "other users or columns"))
    return out


def rerun_failed(spec, *, db: str = DEFAULT_DB, overrides: dict | None = None, on: Local | None = None,
                 timeout: float | None = None, workdir: Path | None = None, console=None) -> SweepResult:
    """Retry the failed, nan, oom, timeout, interrupted and stalled runs of a spec, in place."""
    from ablate import plan as plan_mod
    from ablate.store import RETRYABLE, open_existing

    store = open_existing(db)
    spec_obj = _load(spec)
    name = plan_mod.experiment_name(spec_obj, overrides or {})
    exp = store.experiment(name)
    if exp is None:
        raise UsageError(f"experiment {name!r} (from {spec}) is not in {store.db}; run `ablate run {spec}` first")
    ids = store.experiment_run_ids(exp.id)
    retry = {x.value for x in RETRYABLE}
    failed = [r for r in store.runs(ids, with_children=False) if r.status in retry]
    for r in failed:  # a run stored before its values were checked would only fail again
        plan_mod.check_stored(r.model, r.config, f"run {r.id} ({r.name})")
    todo = [r.id for r in failed]
    store.requeue(todo, retry=True)
    result = SweepResult(name, todo, store.counts(todo))
    if todo:
        result.summary = _train_stored(store, todo, on, timeout=timeout, workdir=workdir, console=console)
    return result


def _train_stored(store, run_ids: list[int], on: Local | None, *, timeout, workdir, console, planner=None,
                  slots=None, checked: bool = False) -> Summary:
    """Train stored runs (already pending) as ``run`` trains a spec's (``slots``, and a
    ``workdir`` already ``checked`` writable, where the caller has them)."""
    from ablate.versions import git_commit

    on = on if on is not None else Local()
    if not isinstance(on, Local):
        raise OptionError("executor", "reruns and searches train on this machine (Local)")
    wd = workdir_for(store, workdir)
    if not checked:
        check_writable(wd)
    return _execute(store, run_ids, on, workdir=wd, git=git_commit(Path.cwd()), console=_console(console),
                    timeout=timeout, planner=planner, slots=slots)


# ---------------------------------------------------------------------------- search


@dataclass
class SearchResult:
    """A search's trials as the store holds them after this call."""

    name: str
    metric: str
    direction: str
    trials: list  # ablate.search.Trial, in the order asked
    summary: Summary | None
    answered: int = 0  # trials answered from the store without training
    exhausted: bool = False  # the space holds no more new configurations
    seconds: float = 0.0

    @property
    def best(self):
        from ablate import search as search_mod

        top = search_mod.best(self.trials, self.direction)
        return top[0] if top else None

    @property
    def exit_code(self) -> int:
        return 130 if self.summary is not None and self.summary.interrupted else 0


def search_plan(spec, *, overrides: dict | None = None):
    """The validated search of a spec (its block, row, objective), before anything runs."""
    from ablate import search as search_mod

    return search_mod.prepare(_load(spec), overrides or {})


def search(spec, *, db: str = DEFAULT_DB, overrides: dict | None = None, trials: int | None = None,
           on: Where | None = None, timeout: float | None = None, workdir: Path | None = None, console=None,
           announce=None) -> SearchResult:
    """Tune the spec's ``search:`` row with Optuna; every trial is a stored run, and a
    search run again goes on from what is stored. ``on=Slurm(...)``: trials run as Slurm
    jobs, asked and told here, each valid score answered through the shared folder
    (prune or go on); a search started again after its coordinator died adopts the
    trials its jobs still train. ``announce(found, planner, slots)`` is called once the
    study is rebuilt, before any trial trains."""
    from ablate import search as search_mod
    from ablate.store import Store

    on = on if on is not None else Local()
    if trials is not None and trials < 1:
        raise OptionError("trials", "must be at least 1")
    if isinstance(on, Local) and on.per_gpu == "auto":
        raise OptionError("per_gpu", "expects a number for a search")
    found = search_plan(spec, overrides=overrides)
    cluster = on.cluster() if isinstance(on, Slurm) else None
    store = Store(db)
    slots = on.slots() if isinstance(on, Local) else []
    wd = workdir_for(store, workdir)
    check_writable(wd)
    adopted = _left_running(store, found.name) if isinstance(on, Slurm) else []
    planner = search_mod.StudyPlanner(store, found, trials or found.block.trials, adopt={r.id for r, _ in adopted})
    if announce is not None:
        announce(found, planner, slots)
    t0 = time.monotonic()
    if isinstance(on, Slurm):
        git = _git(found.spec)
        executor = _slurm_executor(store, on, cluster, wd, git)
        summary = _watch(store, list(planner.pending), executor, wd, git, _console(console),
                         total=len(planner.pending) + len(adopted), timeout=timeout, planner=planner, adopted=adopted)
    else:
        summary = _train_stored(store, list(planner.pending), on, timeout=timeout, workdir=wd, console=console,
                                planner=planner, slots=slots, checked=True)
    return SearchResult(found.name, found.metric, found.direction,
                        search_mod.stored_trials(store, found.name, found.metric), summary, planner.answered,
                        planner.exhausted, time.monotonic() - t0)


def _left_running(store, experiment: str) -> list[tuple]:
    """(run, sweep record) of an experiment's runs that a dead coordinator's Slurm jobs
    still train, after writing what its jobs already finished (``ablate collect``)."""
    from ablate.executors import slurm
    from ablate.store import owner_alive

    exp = store.experiment(experiment)
    if exp is None:
        return []
    ids = store.experiment_run_ids(exp.id)
    slurm.collect_runs(store, ids)  # trials whose jobs ended while no coordinator watched
    running = slurm.slurm_runs(store, ids)
    records = store.sweeps(r.owner for r in running)
    return [(r, records[r.owner]) for r in running
            if r.owner in records and r.job_id and owner_alive(records[r.owner].get("coordinator")) is False]


@dataclass
class BestResult:
    """The best trial trained again with other seeds, one row in ``<name>.search.best``."""

    experiment: str
    trial: Any  # ablate.search.Trial
    runs: list  # the done runs, by seed
    total: int
    summary: Summary | None
    metric: str  # the search's objective (a valid metric)

    @property
    def exit_code(self) -> int:
        if self.summary is not None and self.summary.interrupted:
            return 130
        return 0 if len(self.runs) == self.total else 1


def search_best(spec, seeds: list[int], *, db: str = DEFAULT_DB, overrides: dict | None = None,
                on: Local | None = None, timeout: float | None = None, workdir: Path | None = None, console=None,
                announce=None) -> BestResult:
    """The best trial's config with other ``seeds``: ordinary runs (found done when asked
    again), grouped with it under one row in ``<name>.search.best``."""
    from ablate import search as search_mod
    from ablate.store import Store

    if not seeds:
        raise OptionError("seeds", "expects integers like 2021,2022")
    found = search_plan(spec, overrides=overrides)
    store = Store(db)
    top = search_mod.best(search_mod.stored_trials(store, found.name, found.metric), found.direction)
    if not top:
        raise UsageError(f"search {found.name!r} has no finished trial yet (run `ablate search` first)")
    b = top[0]
    runs = [found.run_for(b.params, position=0, seed=b.seed)]
    runs += [found.run_for(b.params, position=i, seed=s) for i, s in enumerate(seeds, 1) if s != b.seed]
    row = f"best_{found.row}"
    runs = [dataclasses.replace(r, name=row) for r in runs]
    name = found.name + search_mod.BEST_SUFFIX
    exp_id = store.sync_experiment(found.spec.model_copy(update={"name": name}), runs)
    ids = store.experiment_run_ids(exp_id)
    store.requeue(ids, retry=True)
    pending = [r.id for r in store.runs(ids, with_children=False) if r.status == "pending"]
    if announce is not None:
        announce(name, b, [r.seed for r in runs], len(pending))
    summary = _train_stored(store, pending, on, timeout=timeout, workdir=workdir, console=console) if pending else None
    done = sorted((r for r in store.runs(ids) if r.status == "done"), key=lambda r: r.seed)
    return BestResult(name, b, done, len(ids), summary, found.metric)

"""Run sweeps on a Slurm cluster through submitit, with the same store and table.

Why it is shaped like this:

* **submitit, not a scheduler of our own.** Pending runs become one Slurm job array
  (``map_array``; Slurm throttles it with ``%K`` from ``--array-parallelism``), exactly
  as Hydra's submitit launcher does. ``cluster="local"`` swaps in submitit's local
  executor — real subprocesses, the same pickled job, the same files — which is what the
  tests and a workstation dry run use.
* **Single writer.** A job never opens the store: each run appends its worker events as
  JSON lines to ``<folder>/<run_id>/events.<job_id>.jsonl`` on shared storage (one file
  per job attempt, so a requeued or resubmitted job never mixes its lines with another's).
  Only a coordinator — ``ablate run`` while it waits, or ``ablate collect`` later from any
  login node — reads those files and writes the store. SQLite is never written over NFS by
  many nodes, and a PostgreSQL URL works the same.
* **The scheduler drives it unchanged.** :class:`SlurmExecutor` implements
  :class:`~ablate.executors.base.Executor`: ``submit`` buffers claimed runs, ``poll``
  submits the buffer as one array, reads new event lines and asks submitit for job states.
  A job that ended (FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, or a local job whose
  process died) without its run's ``finished`` line yields a synthetic ``finished`` event
  (``interrupted``, or ``timeout``), and the next ``ablate run`` requeues the run.
* **Runs outlive their coordinator.** Claimed runs are owned by ``slurm:<sweep id>``; the
  store never calls such a run stale from heartbeats (``store.is_stale``): whether it is
  alive is the job's state, read here. Each sweep's folder, cluster kind and coordinator
  are kept in the store's ``meta`` table under that owner, so ``collect``/``cancel``/
  ``status`` find the files from any machine that sees the same store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ablate.errors import UsageError
from ablate.executors.base import Executor

OWNER_PREFIX = "slurm:"
CLUSTERS = ("slurm", "local", "auto")
CLUSTER_ENV = "ABLATE_SUBMITIT_CLUSTER"  # which submitit executor: slurm (default), local, auto

# Slurm states in which a job may still write its run's events. Everything else is over.
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "SUSPENDED", "RESIZING", "READY", "SIGNALING", "STAGE_OUT", "UNKNOWN",
}
GRACE_SECONDS = {"slurm": 30.0, "auto": 30.0, "local": 0.0}  # shared file systems show the last lines late


# ---------------------------------------------------------------------------- job side


def run_job(tasks: list[dict]) -> list[dict | None]:
    """The function one Slurm job runs (pickled by submitit): the worker, unchanged.

    One task runs in this process. Several (``--per-gpu N`` packs) run concurrently, one
    spawned process each, spread over the GPUs Slurm gave the job, splitting its cores.
    Returns the ``finished`` events (for submitit's result pickle; the files are the record).
    """
    from ablate import worker

    _leave_time_limit_to_slurm()
    job_id = _job_id_here()
    gpus = _visible_gpu_ids()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    prepared, before = [], []
    for i, task in enumerate(tasks):
        t = dict(task)
        use_gpu = t.pop("use_gpu", True)
        t["gpu"] = gpus[i % len(gpus)] if gpus and use_gpu else None
        t["threads"] = max(1, cores // len(tasks))
        path = Path(t.pop("events_dir")) / f"events.{job_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = _done_before(path, t["run_id"])
        if done is not None:
            before.append(done)
            continue
        with open(path, "a", encoding="utf-8") as out:  # a header line: which job, since when
            out.write(json.dumps({"type": "job", "run_id": t["run_id"], "job_id": job_id, "time": _now_iso()}) + "\n")
        prepared.append((t, str(path)))
    if len(prepared) <= 1:
        return before + [worker.run_task_standalone(*p) for p in prepared]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_run_packed, args=p, daemon=True) for p in prepared]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return before + [None] * len(procs)


def _done_before(path: Path, run_id: int) -> dict | None:
    """The ``done`` event an earlier start of this job already wrote for this run, if any.

    A requeued job (``scontrol requeue``, preemption) gets SIGTERM and, Slurm's KillWait
    later, SIGKILL; a run that ends in between has finished and says so in the job's
    events file, yet Slurm starts the job again under the same id. Training it a second
    time would waste the job (its result is stored once either way)."""
    if not path.is_file():
        return None
    events, _ = read_events(path)
    for ev in events:
        if ev.get("run_id") == run_id and ev.get("type") == "finished" and ev.get("status") == "done":
            return ev
    return None


def _leave_time_limit_to_slurm() -> None:
    """Let a job that reaches its time limit end as Slurm's TIMEOUT.

    submitit asks Slurm for SIGUSR2 shortly before the limit; its handler then raises
    ``UncompletedJobError`` inside whatever runs (ablate's runs are not checkpointable):
    mid-training the run would end ``failed``, before the worker starts the job would end
    FAILED and the run ``interrupted`` — resubmitted by every ``ablate run``, forever too
    long. Here a timed-out job carries on until Slurm ends it (TIMEOUT, so its runs are
    collected as ``timeout``); a preempted one still goes to submitit, which requeues it.
    """
    previous = signal.getsignal(signal.SIGUSR2)
    handler = getattr(previous, "__self__", None)
    if not callable(previous) or not hasattr(handler, "has_timed_out"):
        return  # not under submitit's Slurm environment

    def on_usr2(signum, frame):
        if not handler.has_timed_out():
            previous(signum, frame)

    with contextlib.suppress(ValueError):  # not the main thread: leave submitit's handler
        signal.signal(signal.SIGUSR2, on_usr2)


def _run_packed(task: dict, events_path: str):
    """One run of a packed job, in a spawned process: Slurm's SIGUSR2 (see
    :func:`_leave_time_limit_to_slurm`) reaches it too, and would end it by default."""
    from ablate import worker

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return worker.run_task_standalone(task, events_path)


def _job_id_here() -> str:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 - outside submitit (a bare call): the process id
        return f"pid{os.getpid()}"


def _visible_gpu_ids() -> list[str]:
    """Physical GPU ids of this job (Slurm sets CUDA_VISIBLE_DEVICES); RecBole wants them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not env.strip():
        return []
    from ablate.scheduler import visible_gpus

    return visible_gpus()


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


# ---------------------------------------------------------------------------- event files


def events_path(folder: Path, run_id: int, job_id: str) -> Path:
    return Path(folder) / str(run_id) / f"events.{job_id}.jsonl"


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete JSON lines of ``path`` from byte ``offset``; returns them and the new offset.

    A job killed mid-write leaves a last line without its newline: it is left unread (and
    stays so if the job is dead). A line that is not JSON (a torn write followed by a
    restart) is skipped rather than failing the whole collect.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events, offset + end + 1


# ---------------------------------------------------------------------------- job states


def _norm_state(state: str | None) -> str:
    """``CANCELLED by 123`` -> ``CANCELLED``; submitit's local states mapped to Slurm's."""
    s = (state or "UNKNOWN").split()[0].upper().rstrip("+")
    return {"FINISHED": "COMPLETED", "INTERRUPTED": "CANCELLED", "NO": "NODE_FAIL"}.get(s, s)


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return False


def _local_state(folder: Path, job_id: str) -> str:
    """A submitit-local job seen from another process: its id is the controller's pid."""
    try:
        pid = int(job_id)
    except ValueError:
        return "NODE_FAIL"
    if _pid_alive(pid):
        return "RUNNING"
    return "COMPLETED" if (Path(folder) / "jobs" / f"{job_id}_0_result.pkl").exists() else "CANCELLED"


def job_states(cluster: str, folder: Path, job_ids: Iterable[str], jobs: dict | None = None,
               refresh: bool = True) -> dict[str, str]:
    """Slurm-style states of jobs: from the submitit ``jobs`` this process holds, else
    rebuilt from the ids — one ``sacct`` call for all of them on Slurm (``refresh``; else
    the last answer), the controller's pid for local jobs."""
    ids = [str(j) for j in dict.fromkeys(job_ids) if j]
    jobs = jobs or {}
    if cluster == "local":
        return {j: _norm_state(jobs[j].state) if j in jobs else _local_state(folder, j) for j in ids}
    from submitit.slurm.slurm import SlurmJob

    watcher = SlurmJob.watcher  # submitit's shared sacct cache
    for j in ids:
        watcher.register_job(j)
    if refresh and ids:
        watcher.update()
    states = {j: _norm_state(watcher.get_state(j, mode="cache")) for j in ids}
    if refresh:
        states.update(_queue_states([j for j, s in states.items() if s in ACTIVE_STATES]))
    return states


def _queue_states(job_ids: list[str]) -> dict[str, str]:
    """States of live jobs as the controller holds them (``squeue``), for the ids ``sacct``
    calls active or does not know yet.

    Why: ``sacct`` reads the accounting database, which the controller fills
    asynchronously: for a second or more after ``sbatch`` a job is missing there
    (``UNKNOWN``), and a task that started shows ``PENDING`` a while longer. ``squeue``
    answers from the controller itself, but forgets a job minutes after it ends, so
    ``sacct`` stays the source for ended jobs. A failing ``squeue`` (every id purged,
    which it reports with exit 1) leaves ``sacct``'s answer.
    """
    if not job_ids:
        return {}
    base = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs=" + ",".join(base)],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted, states = set(job_ids), {}
    for line in out.splitlines():
        job, _, state = line.strip().partition("|")
        if job in wanted and state:
            states[job] = _norm_state(state)
    return states


def cancel_job(cluster: str, folder: Path, job_id: str, job=None) -> None:
    if job is not None:
        job.cancel(check=False)
    elif cluster == "local":
        try:
            os.kill(int(job_id), signal.SIGINT)  # the controller stops its task, as LocalJob.cancel does
        except (ValueError, ProcessLookupError, PermissionError):
            pass
    else:
        import submitit

        submitit.SlurmJob(folder=Path(folder) / "jobs", job_id=job_id).cancel(check=False)


def ended_event(run_id: int, job_id: str | None, state: str) -> dict:
    status = "timeout" if state == "TIMEOUT" else "interrupted"
    return {"type": "finished", "run_id": run_id, "status": status, "job_id": job_id,
            "error": f"slurm job {job_id} ended ({state}) before the run finished"}


# ---------------------------------------------------------------------------- sweep records


def sweep_key(owner: str) -> str:
    return owner  # "slurm:<32 hex>" fits meta.key (64)


def save_sweep(store, owner: str, record: dict) -> None:
    from ablate.store import Meta

    with store.session() as s:
        row = s.get(Meta, sweep_key(owner))
        if row is None:
            s.add(Meta(key=sweep_key(owner), value=json.dumps(record)))
        else:
            row.value = json.dumps(record)


def load_sweeps(store, owners: Iterable[str]) -> dict[str, dict]:
    from sqlalchemy import select

    from ablate.store import Meta

    keys = [sweep_key(o) for o in set(owners)]
    if not keys:
        return {}
    with store.session() as s:
        rows = s.execute(select(Meta.key, Meta.value).where(Meta.key.in_(keys))).all()
    return {k: json.loads(v) for k, v in rows}


def set_job_ids(store, job_ids: dict[int, str]) -> None:
    from sqlalchemy import update

    from ablate.store import Run

    with store.session() as s:
        for rid, jid in job_ids.items():
            s.execute(update(Run).where(Run.id == rid).values(job_id=jid, executor="slurm"))


# ---------------------------------------------------------------------------- the executor


@dataclass
class _Tracked:
    task: dict
    job_id: str | None = None
    job: Any = field(default=None, repr=False)
    path: Path | None = None
    offset: int = 0
    finished: bool = False
    dead_since: float | None = None


class SlurmExecutor(Executor):
    """Runs tasks as Slurm (or submitit-local) jobs; see the module docstring."""

    name = "slurm"

    def __init__(self, folder: Path | str, *, cluster: str = "slurm", partition: str | None = None,
                 gpus_per_job: int = 0, per_gpu: int = 1, time_min: int = 240,
                 array_parallelism: int | None = None, cpus_per_job: int | None = None, mem_gb: float | None = None,
                 store=None, sweep_id: str | None = None, wait: bool = True, git: str | None = None,
                 job_name: str = "ablate", grace_s: float | None = None):
        if cluster not in CLUSTERS:
            raise UsageError(f"unknown submitit cluster {cluster!r} (expected one of {', '.join(CLUSTERS)})")
        if per_gpu < 1:
            raise UsageError("--per-gpu must be at least 1")
        if gpus_per_job < 0:
            raise UsageError("--gpus-per-job must be 0 or more")
        if array_parallelism is not None and array_parallelism < 1:
            raise UsageError("--array-parallelism must be at least 1")
        self.folder = Path(folder).expanduser().resolve()
        self.cluster, self.partition, self.gpus_per_job = cluster, partition, gpus_per_job
        self.runs_per_job = per_gpu * max(1, gpus_per_job)
        self.time_min, self.array_parallelism = time_min, array_parallelism
        self.cpus_per_job, self.mem_gb, self.job_name = cpus_per_job, mem_gb, job_name
        self.store, self.wait, self.git = store, wait, git
        self.sweep_id = sweep_id or uuid.uuid4().hex
        self.owner = OWNER_PREFIX + self.sweep_id
        self.grace_s = GRACE_SECONDS[cluster] if grace_s is None else grace_s
        self._buffer: list[dict] = []
        self._runs: dict[int, _Tracked] = {}
        self._pending: list[dict] = []
        self._submitit = None
        self._recorded = False
        self._last_sacct = float("-inf")
        self.sacct_every = 30.0  # seconds between sacct calls while waiting (Slurm only)

    # -------------------------------------------------------------- submission

    def _executor(self):
        if self._submitit is None:
            import submitit

            ex = submitit.AutoExecutor(folder=self.folder / "jobs", cluster=None if self.cluster == "auto" else self.cluster)
            params = {
                "name": self.job_name, "timeout_min": int(self.time_min),
                "gpus_per_node": self.gpus_per_job or None, "cpus_per_task": self.cpus_per_job, "mem_gb": self.mem_gb,
                "slurm_partition": self.partition, "slurm_array_parallelism": self.array_parallelism,
                # SIGUSR2 this long before the limit (submitit: 90 s), after the job started
                "slurm_signal_delay_s": min(90, int(self.time_min) * 15),
            }
            ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
            self._submitit = ex
        return self._submitit

    def record(self) -> dict:
        from ablate.store import make_owner

        return {"folder": str(self.folder), "cluster": self.cluster, "coordinator": make_owner(), "wait": self.wait,
                "git": self.git, "partition": self.partition}

    def flush(self) -> list[str]:
        """Submit the buffered tasks as one job array, ``runs_per_job`` runs per job."""
        if not self._buffer:
            return []
        tasks, self._buffer = self._buffer, []
        if self.store is not None and not self._recorded:
            save_sweep(self.store, self.owner, self.record())
            self._recorded = True
        chunks = [tasks[i:i + self.runs_per_job] for i in range(0, len(tasks), self.runs_per_job)]
        payload = [[dict(t, events_dir=str(self.folder / str(t["run_id"])), use_gpu=self.gpus_per_job > 0) for t in c]
                   for c in chunks]
        try:
            jobs = self._executor().map_array(run_job, payload)
        except Exception as err:  # noqa: BLE001 - sbatch refused (bad partition, quota): the runs' result
            message = " ".join(f"{type(err).__name__}: {err}".split())[:500]
            for t in tasks:
                self._runs[t["run_id"]].finished = True
                self._pending.append({"type": "finished", "run_id": t["run_id"], "status": "failed",
                                      "error": f"job submission failed: {message}"})
            return []
        ids = {}
        for chunk, job in zip(chunks, jobs):
            for t in chunk:
                tr = self._runs[t["run_id"]]
                tr.job, tr.job_id = job, str(job.job_id)
                tr.path = events_path(self.folder, t["run_id"], tr.job_id)
                ids[t["run_id"]] = tr.job_id
        if self.store is not None:
            set_job_ids(self.store, ids)
        return sorted(set(ids.values()), key=str)

    # -------------------------------------------------------------- interface

    def _active(self) -> int:
        return sum(1 for tr in self._runs.values() if not tr.finished)

    def capacity(self) -> int:
        # On Slurm the whole array goes in at once and Slurm applies %K; submitit's local
        # executor has no queue, so there --array-parallelism caps the jobs alive at once.
        if self.cluster == "local":
            return max(0, (self.array_parallelism or 1) * self.runs_per_job - self._active())
        return 1_000_000

    def submit(self, task: dict) -> None:
        self._runs[task["run_id"]] = _Tracked(task=task)
        self._buffer.append(task)

    def poll(self, timeout: float) -> list[dict]:
        self.flush()
        events, self._pending = self._pending, []
        for rid, tr in self._runs.items():
            if not tr.finished and tr.path is not None:
                events.extend(self._read(tr))
        events.extend(self._check_jobs())
        if not events and timeout > 0 and self._active():
            time.sleep(timeout)
        return events

    def _read(self, tr: _Tracked) -> list[dict]:
        new, tr.offset = read_events(tr.path, tr.offset)
        out = []
        for ev in new:
            if ev.get("type") == "job" or ev.get("run_id") != tr.task["run_id"]:
                continue
            ev["job_id"] = tr.job_id
            if ev.get("type") == "finished":
                tr.finished = True
            out.append(ev)
        return out

    def _check_jobs(self) -> list[dict]:
        live = {rid: tr for rid, tr in self._runs.items() if not tr.finished and tr.job is not None}
        if not live:
            return []
        now = time.monotonic()
        refresh = now - self._last_sacct >= self.sacct_every
        if refresh:
            self._last_sacct = now
        states = job_states(self.cluster, self.folder, [tr.job_id for tr in live.values()],
                            {tr.job_id: tr.job for tr in live.values()}, refresh=refresh)
        out = []
        for rid, tr in live.items():
            state = states.get(tr.job_id, "UNKNOWN")
            if state in ACTIVE_STATES:
                tr.dead_since = None
                continue
            out.extend(self._read(tr))  # the last lines may have landed since
            if tr.finished:
                continue
            tr.dead_since = tr.dead_since or now
            if now - tr.dead_since >= self.grace_s:
                tr.finished = True
                out.append(ended_event(rid, tr.job_id, state))
        return out

    def cancel(self, run_id: int, status: str, error: str) -> None:
        tr = self._runs.get(run_id)
        if tr is None or tr.finished:
            return
        if tr.task in self._buffer:
            self._buffer.remove(tr.task)
        elif tr.job is not None:
            cancel_job(self.cluster, self.folder, tr.job_id, tr.job)  # packed runs of that job end as interrupted
        tr.finished = True
        self._pending.append({"type": "finished", "run_id": run_id, "status": status, "error": error, "job_id": tr.job_id})

    def shutdown(self, kill: bool = False) -> None:
        if not kill:
            return
        self._buffer.clear()
        seen = set()
        for tr in self._runs.values():
            if not tr.finished and tr.job is not None and tr.job_id not in seen:
                seen.add(tr.job_id)
                cancel_job(self.cluster, self.folder, tr.job_id, tr.job)

    def job_ids(self) -> dict[int, str]:
        return {rid: tr.job_id for rid, tr in self._runs.items() if tr.job_id}


# ---------------------------------------------------------------------------- coordinator helpers


def cluster_from_env() -> str:
    cluster = os.environ.get(CLUSTER_ENV, "slurm").strip().lower() or "slurm"
    if cluster not in CLUSTERS:
        raise UsageError(f"{CLUSTER_ENV}={cluster!r}: expected one of {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError(f"--executor slurm: sbatch is not on PATH here (run from a Slurm login node, "
                         f"or set {CLUSTER_ENV}=local to try the flow on this machine)")
    return cluster


def parse_time(value: str) -> int:
    """Slurm's ``[D-]HH:MM:SS`` / ``MM:SS`` / minutes -> whole minutes (at least 1)."""
    text = value.strip()
    try:
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise UsageError(f"--time expects [D-]HH:MM:SS or minutes, got {value!r}") from None
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise UsageError(f"--time expects [D-]HH:MM:SS or minutes, got {value!r}")
    minutes = days * 1440 + h * 60 + m + (1 if s > 0 else 0)
    if minutes < 1 or min(h, m, s, days) < 0:
        raise UsageError(f"--time must be positive, got {value!r}")
    return minutes


def check_options(time_limit: str, per_gpu: str, gpus_per_job: int, array_parallelism: int | None) -> None:
    """Every ``ablate run --executor slurm`` option error, before the store is touched."""
    parse_time(time_limit)
    if per_gpu != "auto" and (not str(per_gpu).isdigit() or int(per_gpu) < 1):
        raise UsageError(f"--per-gpu expects a number of runs per job and GPU, got {per_gpu!r}")
    if gpus_per_job < 0:
        raise UsageError("--gpus-per-job must be 0 or more")
    if array_parallelism is not None and array_parallelism < 1:
        raise UsageError("--array-parallelism must be at least 1")
    cluster_from_env()


def default_folder(workdir: Path) -> Path:
    return Path(workdir) / "slurm"


def submit_pending(store, run_ids: list[int], executor: SlurmExecutor, workdir: Path,
                   keep_checkpoints: bool = False) -> tuple[dict[int, str], list[str]]:
    """``--no-wait``: claim every pending run and submit them as one array.

    Returns ``{run id: job id}`` and the errors of submissions that Slurm refused (those
    runs are recorded ``failed`` at once: no coordinator will collect them)."""
    from ablate.scheduler import make_task
    from ablate.store import Status

    while True:
        run = store.claim(run_ids, executor.owner)
        if run is None:
            break
        executor.submit(make_task(run, workdir, keep_checkpoints))
    executor.flush()
    refused, executor._pending = executor._pending, []
    for ev in refused:
        store.finish(ev["run_id"], Status(ev["status"]), error=ev.get("error"), owner=executor.owner)
    return executor.job_ids(), sorted({ev.get("error", "") for ev in refused})


def run_sweep(store, spec_path: Path, run_ids: list[int], names: dict[int, str], workdir: Path, console, *,
              partition: str | None, gpus_per_job: int, per_gpu: int, time: str, array_parallelism: int | None,
              slurm_folder: Path | None, no_wait: bool, timeout: float | None, keep_checkpoints: bool,
              pending: int) -> int:
    """``ablate run --executor slurm``: submit the pending runs, then wait and collect
    (the scheduler's loop, unchanged) or, with ``--no-wait``, return at once."""
    from ablate import scheduler
    from ablate.progress import SweepView

    cluster = cluster_from_env()
    folder = slurm_folder or default_folder(workdir)
    git = scheduler.git_commit(Path(spec_path).resolve().parent)
    executor = SlurmExecutor(folder, cluster=cluster, partition=partition, gpus_per_job=gpus_per_job, per_gpu=per_gpu,
                             time_min=parse_time(time), array_parallelism=array_parallelism, store=store,
                             wait=not no_wait, git=git)
    if no_wait:
        ids, errors = submit_pending(store, run_ids, executor, workdir, keep_checkpoints)
        for err in errors:
            console.print(f"[red]not submitted:[/red] {err}", highlight=False)
        jobs = sorted(set(ids.values()), key=str)
        console.print(f"submitted {len(ids)} run(s) as {len(jobs)} job(s) [{_span(jobs)}] on {cluster}; "
                      f"files in {executor.folder}")
        console.print(f"collect results with: ablate collect {spec_path}" + ("" if str(store.db) == "results.db" else f" --db {store.db}"))
        return 0 if ids else 1
    with SweepView(pending, names, console) as view:
        summary = scheduler.Sweep(store, run_ids, executor, executor.owner, workdir, timeout=timeout, view=view,
                                  git=git, keep_checkpoints=keep_checkpoints).run()
    parts = ", ".join(f"{n} {s}" for s, n in sorted(summary.finished.items())) or "nothing"
    console.print(f"finished: {parts}" + (f"; {summary.elsewhere} still running elsewhere" if summary.elsewhere else ""))
    if summary.interrupted:
        console.print("interrupted: its jobs were cancelled; unfinished runs run again next time")
        return 130
    return 0 if set(summary.finished) <= {"done"} else 1


def _span(ids: list[str]) -> str:
    if len(ids) <= 4:
        return ", ".join(ids)
    return f"{ids[0]} … {ids[-1]}"


# ---------------------------------------------------------------------------- collect / cancel / status


@dataclass
class CollectSummary:
    finished: dict[str, int] = field(default_factory=dict)
    running: int = 0  # still running in their jobs
    live: int = 0  # watched by a live coordinator (left to it)
    lost: int = 0  # no sweep record: cannot find their files

    def line(self) -> str:
        parts = [f"{n} {s}" for s, n in sorted(self.finished.items())]
        if self.running:
            parts.append(f"{self.running} still running")
        if self.live:
            parts.append(f"{self.live} collected by a running 'ablate run'")
        if self.lost:
            parts.append(f"{self.lost} without a sweep record")
        return ", ".join(parts) or "nothing to collect"


def slurm_runs(store, run_ids: list[int] | None, with_children: bool = False) -> list:
    """Running runs (among ``run_ids``) that are owned by a Slurm sweep."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from ablate.store import Run, Status

    with store.session() as s:
        q = select(Run).where(Run.status == Status.RUNNING.value, Run.owner.like(OWNER_PREFIX + "%"))
        if run_ids is not None:
            q = q.where(Run.id.in_(list(run_ids)))
        if with_children:
            q = q.options(selectinload(Run.epochs))
        return list(s.scalars(q.order_by(Run.id)))


def _coordinator_watching(record: dict) -> bool:
    from ablate.store import owner_alive

    return bool(record.get("wait")) and owner_alive(record.get("coordinator")) is True


def collect_runs(store, run_ids: list[int] | None, include_live: bool = False) -> CollectSummary:
    """Write what Slurm jobs left on shared storage into the store; idempotent.

    Applies each running Slurm-owned run's event lines (start, epochs, the outcome) and
    ends as ``interrupted``/``timeout`` the runs whose job is over without an outcome;
    ``ablate run`` requeues those. Epoch rows already stored with the same values are not
    written again, so a second collect changes nothing.
    """
    summary = CollectSummary()
    runs = slurm_runs(store, run_ids, with_children=True)
    if not runs:
        return summary
    records = load_sweeps(store, [r.owner for r in runs])
    mine = []
    for run in runs:
        record = records.get(sweep_key(run.owner))
        if record is None:
            summary.lost += 1
        elif not include_live and _coordinator_watching(record):
            summary.live += 1
        else:
            mine.append((run, record))
    states = _states_of(mine)
    for run, record in mine:
        status = _collect_one(store, run, record, states)
        if status is None:
            summary.running += 1
        else:
            summary.finished[status] = summary.finished.get(status, 0) + 1
    return summary


def _states_of(pairs) -> dict[str, str]:
    """Job states of (run, sweep record) pairs: one sacct call per sweep folder."""
    groups: dict[tuple[str, str], list[str]] = {}
    for run, record in pairs:
        if run.job_id:
            groups.setdefault((record.get("cluster", "slurm"), record["folder"]), []).append(run.job_id)
    states: dict[str, str] = {}
    for (cluster, folder), ids in groups.items():
        states.update(job_states(cluster, Path(folder), ids))
    return states


def _collect_one(store, run, record: dict, states: dict[str, str]) -> str | None:
    from ablate.store import Status

    folder, cluster = Path(record["folder"]), record.get("cluster", "slurm")
    if not run.job_id:  # claimed, but its coordinator died before submitting it
        store.finish(run.id, Status.INTERRUPTED, error="its Slurm job was never submitted", owner=run.owner)
        return Status.INTERRUPTED.value
    path = events_path(folder, run.id, run.job_id)
    events, offset = read_events(path)
    state = _Applied(run)
    outcome = state.apply(store, events, record)
    if outcome is not None:
        return outcome
    job = states.get(run.job_id) or job_states(cluster, folder, [run.job_id])[run.job_id]
    if job in ACTIVE_STATES:
        return None
    events, _ = read_events(path, offset)  # the job may have ended between the two reads
    outcome = state.apply(store, events, record)
    if outcome is not None:
        return outcome
    ev = ended_event(run.id, run.job_id, job)
    store.finish(run.id, Status(ev["status"]), error=ev["error"], owner=run.owner)
    return ev["status"]


class _Applied:
    """Writes one run's events the way the scheduler does, skipping what is already stored."""

    def __init__(self, run):
        self.run = run
        self.stored = {e.epoch: e for e in run.epochs}
        self.started = run.started_at is not None
        self.started_at: datetime | None = None

    def apply(self, store, events: list[dict], record: dict) -> str | None:
        from ablate.store import Status

        rid = self.run.id
        for ev in events:
            if ev.get("run_id") != rid:
                continue
            kind = ev.get("type")
            if kind == "job" and not self.started:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    self.started_at = datetime.fromisoformat(ev["time"])
            elif kind == "started" and not self.started:
                fields = {k: ev.get(k) for k in ("device", "host", "pid", "log_path")}
                if self.started_at is not None:
                    fields["started_at"] = self.started_at
                store.mark_started(rid, owner=self.run.owner, executor="slurm", git_commit=record.get("git"), **fields)
                self.started = True
            elif kind == "epoch":
                old = self.stored.get(ev["epoch"])
                if old is None or old.losses != ev.get("losses") or old.train_seconds != ev.get("train_seconds"):
                    store.add_epoch(rid, ev["epoch"], losses=ev.get("losses"), train_seconds=ev.get("train_seconds"),
                                    owner=self.run.owner)
            elif kind == "valid":
                old = self.stored.get(ev["epoch"])
                if old is None or old.valid_score != ev.get("valid_score") or old.valid != ev.get("valid"):
                    store.add_epoch(rid, ev["epoch"], valid_score=ev.get("valid_score"), valid=ev.get("valid"),
                                    owner=self.run.owner)
            elif kind == "finished":
                status = Status(ev["status"])
                fields = {k: ev[k] for k in ("epoch", "best_epoch", "wall_seconds", "versions", "peak_mem_mb")
                          if ev.get(k) is not None}
                store.finish(rid, status, metrics=ev.get("metrics"), error=ev.get("error"), owner=self.run.owner, **fields)
                return status.value
        return None


def cancel_runs(store, run_ids: list[int]) -> tuple[int, list[str]]:
    """Cancel the Slurm jobs of these running runs and mark the runs ``interrupted``."""
    from ablate.store import Status

    runs = slurm_runs(store, run_ids)
    records = load_sweeps(store, [r.owner for r in runs])
    cancelled: dict[str, None] = {}
    for run in runs:
        record = records.get(sweep_key(run.owner), {})
        if run.job_id and run.job_id not in cancelled:
            cancel_job(record.get("cluster", "slurm"), Path(record.get("folder", ".")), run.job_id)
            cancelled[run.job_id] = None
        store.finish(run.id, Status.INTERRUPTED, error=f"cancelled (ablate cancel; slurm job {run.job_id})", owner=run.owner)
    return len(runs), list(cancelled)


def running_job_states(store, rows: list[dict]) -> dict[int, str]:
    """``{run id: job state}`` for running rows (dicts with id, owner, job_id) of Slurm sweeps."""
    rows = [r for r in rows if r.get("job_id") and (r.get("owner") or "").startswith(OWNER_PREFIX)]
    records = load_sweeps(store, [r["owner"] for r in rows])
    pairs = []
    for r in rows:
        record = records.get(sweep_key(r["owner"]))
        if record is not None:
            pairs.append((_Row(r["id"], r["job_id"]), record))
    states = _states_of(pairs)
    return {run.id: states.get(run.job_id, "UNKNOWN") for run, _ in pairs}


@dataclass
class _Row:
    id: int
    job_id: str

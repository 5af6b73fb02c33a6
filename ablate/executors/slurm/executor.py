"""The Slurm executor: pending runs become one submitit job array; events come back as files.

:class:`SlurmExecutor` implements :class:`~ablate.executors.base.Executor`, so the
scheduler's loop drives a Slurm sweep unchanged: ``submit`` buffers claimed runs, ``poll``
submits the buffer as one array (``map_array``; Slurm throttles it with ``%K`` from
``--array-parallelism``, as Hydra's submitit launcher does), reads new event lines and
asks for job states. A job that ended without its run's ``finished`` line yields a
synthetic one (``interrupted``, or ``timeout``), and the next ``ablate run`` requeues
the run. ``cluster="local"`` swaps in submitit's local executor (real subprocesses, the
same pickled job, the same files), which is what the tests and a workstation dry run use.

Claimed runs are owned by ``slurm:<sweep id>``; the store never calls such a run stale
from heartbeats: whether it is alive is its job's state. Each sweep's folder, cluster
kind and coordinator are kept in the store (:meth:`ablate.store.Store.save_sweep`), so
``collect``/``cancel``/``status`` find the files from any machine that sees the store.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import OptionError, UsageError
from ablate.executors.base import Executor
from ablate.executors.slurm.files import ACTIVE_STATES, cancel_job, ended_event, events_path, job_states, read_events
from ablate.executors.slurm.jobs import run_job
from ablate.messages import Task, make_task

OWNER_PREFIX = "slurm:"
CLUSTERS = ("slurm", "local", "auto")
CLUSTER_ENV = "ABLATE_SUBMITIT_CLUSTER"  # which submitit executor: slurm (default), local, auto
GRACE_SECONDS = {"slurm": 30.0, "auto": 30.0, "local": 0.0}  # shared file systems show the last lines late


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
            raise OptionError("per_gpu", "must be at least 1")
        if gpus_per_job < 0:
            raise OptionError("gpus_per_job", "must be 0 or more")
        if array_parallelism is not None and array_parallelism < 1:
            raise OptionError("array_parallelism", "must be at least 1")
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
            self.store.save_sweep(self.owner, self.record())
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
            self.store.set_job_ids(ids, executor="slurm")
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

    def submit(self, task: Task) -> None:
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


def cluster_from_env() -> str:
    cluster = os.environ.get(CLUSTER_ENV, "slurm").strip().lower() or "slurm"
    if cluster not in CLUSTERS:
        raise UsageError(f"{CLUSTER_ENV}={cluster!r}: expected one of {', '.join(CLUSTERS)}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise OptionError("executor", "sbatch is not on PATH here (run from a Slurm login node, "
                          f"or set {CLUSTER_ENV}=local to try the flow on this machine)", value="slurm")
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
        raise OptionError("time", f"expects [D-]HH:MM:SS or minutes, got {value!r}") from None
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        raise OptionError("time", f"expects [D-]HH:MM:SS or minutes, got {value!r}")
    minutes = days * 1440 + h * 60 + m + (1 if s > 0 else 0)
    if minutes < 1 or min(h, m, s, days) < 0:
        raise OptionError("time", f"must be positive, got {value!r}")
    return minutes


def check_options(time_limit: str, per_gpu: str, gpus_per_job: int, array_parallelism: int | None) -> None:
    """Every ``ablate run --executor slurm`` option error, before the store is touched."""
    parse_time(time_limit)
    if per_gpu != "auto" and (not str(per_gpu).isdigit() or int(per_gpu) < 1):
        raise OptionError("per_gpu", f"expects a number of runs per job and GPU, got {per_gpu!r}")
    if gpus_per_job < 0:
        raise OptionError("gpus_per_job", "must be 0 or more")
    if array_parallelism is not None and array_parallelism < 1:
        raise OptionError("array_parallelism", "must be at least 1")
    cluster_from_env()


def default_folder(workdir: Path) -> Path:
    return Path(workdir) / "slurm"


def submit_pending(store, run_ids: list[int], executor: SlurmExecutor, workdir: Path,
                   keep_checkpoints: bool = False) -> tuple[dict[int, str], list[str]]:
    """``--no-wait``: claim every pending run and submit them as one array.

    Returns ``{run id: job id}`` and the errors of submissions that Slurm refused (those
    runs are recorded ``failed`` at once: no coordinator will collect them)."""
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


def _span(ids: list[str]) -> str:
    if len(ids) <= 4:
        return ", ".join(ids)
    return f"{ids[0]} … {ids[-1]}"

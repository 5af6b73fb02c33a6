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

import contextlib
import json
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
from ablate.messages import Task, Work, ended, make_task

OWNER_PREFIX = "slurm:"
CLUSTERS = ("slurm", "local", "auto")
CLUSTER_ENV = "ABLATE_SUBMITIT_CLUSTER"  # which submitit executor: slurm (default), local, auto
GRACE_SECONDS = {"slurm": 30.0, "auto": 30.0, "local": 0.0}  # shared file systems show the last lines late


@dataclass
class _Tracked:
    task: dict
    unit: int  # what the run was submitted in: itself, or its fused group (one array element)
    job_id: str | None = None
    job: Any = field(default=None, repr=False)
    path: Path | None = None
    folder: Path | None = None  # the shared folder of its job's files (an adopted run's: its sweep's)
    cluster: str | None = None
    offset: int = 0
    finished: bool = False
    dead_since: float | None = None
    attempt: int = 0  # the job's restart count, from its latest header line
    valid_epoch: int | None = None  # the epoch of the last valid event read


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
        self.peak_mb: float | None = None  # a fused group's hint: the largest stored peak of such runs
        self._units = 0
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

    def _item(self, work: dict) -> dict:
        """One array element's payload: a task, or a group of tasks, with where the job
        writes each run's events."""
        def place(t):
            return dict(t, events_dir=str(self.folder / str(t["run_id"])), use_gpu=self.gpus_per_job > 0)

        if "members" in work:
            return {"members": [place(t) for t in work["members"]], "peak_mb": self.peak_mb}
        return place(work)

    def flush(self) -> list[str]:
        """Submit the buffered work (runs and fused groups) as one job array,
        ``runs_per_job`` items per job."""
        if not self._buffer:
            return []
        units, self._buffer = self._buffer, []
        if self.store is not None and not self._recorded:
            self.store.save_sweep(self.owner, self.record())
            self._recorded = True
        chunks = [units[i:i + self.runs_per_job] for i in range(0, len(units), self.runs_per_job)]
        payload = [[self._item(w) for w in c] for c in chunks]
        try:
            jobs = self._executor().map_array(run_job, payload)
        except Exception as err:  # noqa: BLE001 - sbatch refused (bad partition, quota): the runs' result
            message = " ".join(f"{type(err).__name__}: {err}".split())[:500]
            for w in units:
                for t in _tasks(w):
                    self._runs[t["run_id"]].finished = True
                    self._pending.append(ended(t["run_id"], "failed", f"job submission failed: {message}"))
            return []
        ids = {}
        for chunk, job in zip(chunks, jobs):
            for t in (t for w in chunk for t in _tasks(w)):
                tr = self._runs[t["run_id"]]
                tr.job, tr.job_id = job, str(job.job_id)
                tr.path = events_path(self.folder, t["run_id"], tr.job_id)
                ids[t["run_id"]] = tr.job_id
        if self.store is not None:
            self.store.set_job_ids(ids, executor="slurm")
        return sorted(set(ids.values()), key=str)

    # -------------------------------------------------------------- interface

    def _active(self) -> int:
        """Items (runs, or fused groups) not finished."""
        return len({tr.unit for tr in self._runs.values() if not tr.finished})

    def capacity(self) -> int:
        # On Slurm the whole array goes in at once and Slurm applies %K; submitit's local
        # executor has no queue, so there --array-parallelism caps the jobs alive at once.
        if self.cluster == "local":
            return max(0, (self.array_parallelism or 1) * self.runs_per_job - self._active())
        return 1_000_000

    def submit(self, work: Work) -> None:
        """Buffer a task or a fused group (``{"members": [...]}``, one array element whose
        runs train side by side); the next :meth:`poll` submits the buffer as one array."""
        self._units += 1
        for t in _tasks(work):
            self._runs[t["run_id"]] = _Tracked(task=t, unit=self._units, folder=self.folder, cluster=self.cluster)
        self._buffer.append(work)

    def adopt(self, run, task: Task, record: dict) -> None:
        """Watch a run that another coordinator's sweep submitted and left running (that
        coordinator died): read its job's events file and answer its verdicts, as if this
        executor had submitted it. ``record`` is that sweep's record in the store."""
        self._units += 1
        folder = Path(record["folder"])
        self._runs[run.id] = _Tracked(task=task, unit=self._units, job_id=run.job_id, folder=folder,
                                      cluster=record.get("cluster", self.cluster),
                                      path=events_path(folder, run.id, run.job_id) if run.job_id else None)

    def answer(self, run_id: int, stop: bool) -> None:
        """A search trial's verdict on its last valid score: a file its job waits for in the
        shared folder (:func:`ablate.executors.slurm.jobs._file_verdicts`), written whole
        (a temporary file renamed) so the job never reads half of it."""
        tr = self._runs.get(run_id)
        if tr is None or tr.finished or tr.valid_epoch is None or not tr.job_id:
            return
        path = Path(tr.folder) / str(run_id) / f"verdict.{tr.job_id}.{tr.attempt}.{tr.valid_epoch}"
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"stop": bool(stop)}), encoding="utf-8")
        os.replace(tmp, path)

    def _beat(self) -> None:
        """Touch the folders' heartbeat files: a job waiting for a verdict waits only while
        a coordinator is alive."""
        from ablate.executors.slurm.jobs import HEARTBEAT_FILE

        for folder in {tr.folder for tr in self._runs.values() if not tr.finished and tr.task.get("verdicts")}:
            with contextlib.suppress(OSError):
                (Path(folder) / HEARTBEAT_FILE).touch()

    def poll(self, timeout: float) -> list[dict]:
        self.flush()
        self._beat()
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
            if ev.get("run_id") != tr.task["run_id"]:
                continue
            if ev.get("type") == "job":
                tr.attempt = int(ev.get("attempt") or 0)
                continue
            ev["job_id"] = tr.job_id
            if ev.get("type") == "valid":
                tr.valid_epoch = ev.get("epoch")
            if ev.get("type") == "finished":
                tr.finished = True
            out.append(ev)
        return out

    def _check_jobs(self) -> list[dict]:
        live = {rid: tr for rid, tr in self._runs.items() if not tr.finished and tr.job_id is not None}
        if not live:
            return []
        now = time.monotonic()
        refresh = now - self._last_sacct >= self.sacct_every
        if refresh:
            self._last_sacct = now
        states: dict[str, str] = {}
        by_folder: dict[tuple, list[_Tracked]] = {}
        for tr in live.values():
            by_folder.setdefault((tr.cluster, str(tr.folder)), []).append(tr)
        for (cluster, folder), trs in by_folder.items():
            states.update(job_states(cluster, Path(folder), [tr.job_id for tr in trs],
                                     {tr.job_id: tr.job for tr in trs if tr.job is not None}, refresh=refresh))
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
        queued = next((w for w in self._buffer if tr.task in _tasks(w)), None)
        if queued is not None:  # not submitted yet: the run leaves its group, the others go on
            if "members" in queued and len(queued["members"]) > 1:
                queued["members"] = [t for t in queued["members"] if t is not tr.task]
            else:
                self._buffer.remove(queued)
        elif tr.job_id is not None:
            # the job's other runs (packed, or fused with it) end interrupted, as its job ends
            cancel_job(tr.cluster or self.cluster, tr.folder or self.folder, tr.job_id, tr.job)
        tr.finished = True
        self._pending.append({"type": "finished", "run_id": run_id, "status": status, "error": error, "job_id": tr.job_id})

    def shutdown(self, kill: bool = False) -> None:
        """With ``kill``, cancel the jobs of unfinished runs. Either way let go of
        submitit's job objects now: one still alive when the interpreter exits prints a
        traceback from its ``__del__`` (submitit's local jobs)."""
        if kill:
            self._buffer.clear()
            seen = set()
            for tr in self._runs.values():
                if not tr.finished and tr.job_id is not None and tr.job_id not in seen:
                    seen.add(tr.job_id)
                    cancel_job(tr.cluster or self.cluster, tr.folder or self.folder, tr.job_id, tr.job)
        for tr in self._runs.values():
            tr.job = None
        self._submitit = None
        import gc

        gc.collect()

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


def default_folder(workdir: Path) -> Path:
    return Path(workdir) / "slurm"


def submit_pending(store, run_ids: list[int], executor: SlurmExecutor, workdir: Path,
                   keep_checkpoints: bool = False, fuse: int = 1) -> tuple[dict[int, str], list[str]]:
    """``--no-wait``: claim every pending run (and, with ``fuse`` > 1, its partners in a
    fused group) and submit them as one array.

    Returns ``{run id: job id}`` and the errors of submissions that Slurm refused (those
    runs are recorded ``failed`` at once: no coordinator will collect them)."""
    from ablate.sharing import Partners
    from ablate.store import Status

    partners = Partners(store, run_ids, executor.owner, fuse)
    while True:
        run = store.claim(run_ids, executor.owner)
        if run is None:
            break
        runs = [run, *partners.claim(run)]
        tasks = [make_task(r, workdir, keep_checkpoints) for r in runs]
        executor.submit(tasks[0] if len(tasks) == 1 else {"members": tasks})
    executor.flush()
    refused, executor._pending = executor._pending, []
    for ev in refused:
        store.finish(ev["run_id"], Status(ev["status"]), error=ev.get("error"), owner=executor.owner)
    return executor.job_ids(), sorted({ev.get("error", "") for ev in refused})


def _tasks(work: Work) -> list[Task]:
    return work["members"] if "members" in work else [work]

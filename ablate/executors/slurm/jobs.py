"""The side of a Slurm job: what one array task runs on its compute node.

submitit pickles :func:`run_job` with its tasks; the job trains them with the same code
as a local worker (:mod:`ablate.serve`) and appends every event to a file of its own in
the shared folder (:mod:`.files`). It never opens the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from datetime import datetime, timezone
from pathlib import Path

from ablate.executors.slurm.files import read_events

# Seconds a job waits for the coordinator's verdict on a search trial's valid score before it
# goes on without one, and the age of the coordinator's heartbeat file past which it does
# not wait at all (a coordinator killed and not restarted: the trial trains on, unpruned).
VERDICT_WAIT = 120.0
HEARTBEAT_STALE = 60.0
HEARTBEAT_FILE = "coordinator.alive"


def run_job(items: list[dict]) -> list[dict | None]:
    """The function one Slurm job runs (pickled by submitit): the worker, unchanged.

    Each item is a task (one run) or a fused group (``{"members": [...]}``: runs of one
    graph backbone trained side by side, as ``ablate run --fuse`` does locally). One item
    runs in this process; several (``--per-gpu N`` packs) run concurrently, one spawned
    process each, spread over the GPUs Slurm gave the job, splitting its cores. Every run
    appends its events to its own file; a run that an earlier start of this job (a
    requeue) already finished is not trained again, and a group goes on without it.
    Returns the ``finished`` events (for submitit's result pickle; the files are the record).
    """
    _leave_time_limit_to_slurm()
    job_id = _job_id_here()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    gpus = _visible_gpu_ids()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    prepared, before = [], []
    for i, item in enumerate(items):
        members = item["members"] if "members" in item else [item]
        gpu = gpus[i % len(gpus)] if gpus and members[0].get("use_gpu", True) else None
        todo, paths = [], {}
        for task in members:
            t = dict(task)
            t.pop("use_gpu", None)
            t["gpu"], t["threads"] = gpu, max(1, cores // len(items))
            path = Path(t.pop("events_dir")) / f"events.{job_id}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            done = _done_before(path, t["run_id"])
            if done is not None:
                before.append(done)
                continue
            with open(path, "a", encoding="utf-8") as out:  # a header line: which job, which attempt, since when
                out.write(json.dumps({"type": "job", "run_id": t["run_id"], "job_id": job_id, "attempt": attempt,
                                      "time": _now_iso()}) + "\n")
            if t.get("verdicts"):
                t["verdict_file"] = str(path.parent / f"verdict.{job_id}.{attempt}")
            todo.append(t)
            paths[t["run_id"]] = str(path)
        if todo:
            work = {"members": todo, "peak_mb": item.get("peak_mb")} if len(todo) > 1 else todo[0]
            prepared.append((work, paths))
    if len(prepared) <= 1:
        return before + [ev for p in prepared for ev in _run(*p)]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_run_packed, args=p, daemon=True) for p in prepared]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return before + [None] * len(procs)


def _run(work: dict, paths: dict[int, str]) -> list[dict]:
    """Train one item of the job in this process: a run, or a fused group in as many
    groups one after another as its GPU holds by the stored peak memory of such runs."""
    from ablate import serve

    members = work.get("members")
    if members is None:
        return serve.run_standalone(work, paths, verdict=_file_verdicts(work))
    out = []
    for group in _fitting(members, work.get("peak_mb")):
        out += serve.run_standalone({"members": group} if len(group) > 1 else group[0], paths)
    return out


def _fitting(members: list[dict], peak_mb: float | None) -> list[list[dict]]:
    """The group cut to what its GPU holds: as many members side by side as fit by the
    largest peak memory stored for such runs (``--fuse auto`` on a GPU, as on one
    machine), the rest in further groups; the whole group where the GPU or the peak is
    unknown (a group out of memory ends ``oom`` and the coordinator retries it in halves)."""
    gpu = members[0].get("gpu")
    if gpu is None or peak_mb is None:
        return [members]
    from ablate.devices import gpu_memory_mb
    from ablate.executors.packing import slots_for

    total = gpu_memory_mb().get(str(gpu))
    if total is None:
        return [members]
    size = slots_for(total, peak_mb, cap=len(members), context_mb=0.0)
    return [members[i:i + size] for i in range(0, len(members), size)]


def _file_verdicts(task: dict):
    """A search trial's verdicts: after each valid event the coordinator writes
    ``<verdict_file>.<epoch>`` (``{"stop": true|false}``) in the shared folder; the run
    waits for it at most :data:`VERDICT_WAIT` seconds, and not at all while the
    coordinator's heartbeat file is older than :data:`HEARTBEAT_STALE` seconds."""
    base = task.get("verdict_file")
    if not base:
        return None
    import time

    folder = Path(base).parent.parent

    def verdict(epoch: int) -> bool:
        path = Path(f"{base}.{epoch}")
        deadline = time.monotonic() + VERDICT_WAIT
        while time.monotonic() < deadline:
            if path.is_file():
                try:
                    return bool(json.loads(path.read_text(encoding="utf-8")).get("stop"))
                except (OSError, ValueError):
                    pass  # written as we read it: read again
            beat = folder / HEARTBEAT_FILE
            try:
                if time.time() - beat.stat().st_mtime > HEARTBEAT_STALE:
                    return False  # no coordinator to answer: go on
            except OSError:
                return False
            time.sleep(0.2)
        return False

    return verdict


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


def _run_packed(work: dict, paths: dict[int, str]):
    """One item of a packed job, in a spawned process: Slurm's SIGUSR2 (see
    :func:`_leave_time_limit_to_slurm`) reaches it too, and would end it by default."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return _run(work, paths)


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
    from ablate.devices import visible_gpus

    return visible_gpus()


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()

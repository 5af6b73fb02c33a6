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

def run_job(tasks: list[dict]) -> list[dict | None]:
    """The function one Slurm job runs (pickled by submitit): the worker, unchanged.

    One task runs in this process. Several (``--per-gpu N`` packs) run concurrently, one
    spawned process each, spread over the GPUs Slurm gave the job, splitting its cores.
    Returns the ``finished`` events (for submitit's result pickle; the files are the record).
    """
    from ablate import serve

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
        return before + [serve.run_task_standalone(*p) for p in prepared]
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
    from ablate import serve

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return serve.run_task_standalone(task, events_path)


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

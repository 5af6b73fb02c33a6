"""What a coordinator reads of Slurm: the jobs' event files and the jobs' states.

A job appends its runs' events as JSON lines to ``<folder>/<run_id>/events.<job_id>.jsonl``
(one file per job attempt, so a requeued or resubmitted job never mixes its lines with
another's). Whether a job can still write is its state: ``sacct`` for ended jobs,
``squeue`` for live ones (the accounting database lags the controller), the controller
process for submitit's local executor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterable

from ablate.messages import Finished, ended

# Slurm states in which a job may still write its run's events. Everything else is over.
ACTIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "SUSPENDED", "RESIZING", "READY", "SIGNALING", "STAGE_OUT", "UNKNOWN",
}


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


def ended_event(run_id: int, job_id: str | None, state: str) -> Finished:
    """The ``finished`` event of a run whose job ended (``state``) before the run did."""
    status = "timeout" if state == "TIMEOUT" else "interrupted"
    return ended(run_id, status, f"slurm job {job_id} ended ({state}) before the run finished", job_id=job_id)

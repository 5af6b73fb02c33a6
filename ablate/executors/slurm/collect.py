"""Slurm sweeps after the fact: ``ablate collect``, ``ablate cancel`` and the job states
``ablate status`` shows, from any machine that sees the store and the shared folder.

Collecting is idempotent: each running Slurm-owned run's event lines are applied as the
scheduler applies them (:func:`ablate.recording.apply`, epochs already stored with the
same values skipped), and a run whose job is over without an outcome ends
``interrupted`` or ``timeout``; ``ablate run`` requeues it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ablate.executors.slurm.executor import OWNER_PREFIX
from ablate.executors.slurm.files import ACTIVE_STATES, cancel_job, ended_event, events_path, job_states, read_events
from ablate.messages import ended

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
    return store.running(run_ids, owner_prefix=OWNER_PREFIX, with_epochs=with_children)


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
    records = store.sweeps(r.owner for r in runs)
    mine = []
    for run in runs:
        record = records.get(run.owner)
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
    from ablate import recording

    folder, cluster = Path(record["folder"]), record.get("cluster", "slurm")
    if not run.job_id:  # claimed, but its coordinator died before submitting it
        recording.apply(store, ended(run.id, "interrupted", "its Slurm job was never submitted"), owner=run.owner)
        return "interrupted"
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
    recording.apply(store, ev, owner=run.owner)
    return ev["status"]


class _Applied:
    """Writes one run's events as the scheduler does (:func:`ablate.recording.apply`),
    skipping what is already stored, across several reads of the run's file."""

    def __init__(self, run):
        self.run = run
        self.stored = {e.epoch: e for e in run.epochs}
        self.started = run.started_at is not None
        self.started_at: datetime | None = None  # the job's start, from its header line

    def apply(self, store, events: list[dict], record: dict) -> str | None:
        """Apply ``events``; returns the run's end status when they hold it."""
        from ablate import recording

        for ev in events:
            if ev.get("run_id") != self.run.id:
                continue
            kind = ev.get("type")
            if kind == "job":
                if not self.started:
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        self.started_at = datetime.fromisoformat(ev["time"])
                continue
            if kind == "started":
                if self.started:
                    continue
                self.started = True
            recording.apply(store, ev, owner=self.run.owner, executor="slurm", git=record.get("git"),
                            started_at=self.started_at, stored=self.stored)
            if kind == "finished":
                return ev["status"]
        return None


def cancel_runs(store, run_ids: list[int]) -> tuple[int, list[str]]:
    """Cancel the Slurm jobs of these running runs and mark the runs ``interrupted``."""
    from ablate import recording

    runs = slurm_runs(store, run_ids)
    records = store.sweeps(r.owner for r in runs)
    cancelled: dict[str, None] = {}
    for run in runs:
        record = records.get(run.owner, {})
        if run.job_id and run.job_id not in cancelled:
            cancel_job(record.get("cluster", "slurm"), Path(record.get("folder", ".")), run.job_id)
            cancelled[run.job_id] = None
        recording.apply(store, ended(run.id, "interrupted", f"cancelled (ablate cancel; slurm job {run.job_id})"),
                        owner=run.owner)
    return len(runs), list(cancelled)


def running_job_states(store, rows: list[dict]) -> dict[int, str]:
    """``{run id: job state}`` for running rows (dicts with id, owner, job_id) of Slurm sweeps."""
    rows = [r for r in rows if r.get("job_id") and (r.get("owner") or "").startswith(OWNER_PREFIX)]
    records = store.sweeps(r["owner"] for r in rows)
    pairs = []
    for r in rows:
        record = records.get(r["owner"])
        if record is not None:
            pairs.append((_Row(r["id"], r["job_id"]), record))
    states = _states_of(pairs)
    return {run.id: states.get(run.job_id, "UNKNOWN") for run, _ in pairs}


@dataclass
class _Row:
    id: int
    job_id: str

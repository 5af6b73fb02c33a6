"""Decide where runs go and drive a sweep to its end; the coordinator's main loop.

The scheduler is the single writer of the store during a sweep: it claims pending runs
(atomically, so a second ``ablate run`` of the same spec takes different ones), hands
them to an executor, and writes every event the executor returns. It owns the run
timeouts and the stall watchdog, the out-of-memory back-off, the heartbeat that marks
its runs as alive, and the clean stop on Ctrl-C.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ablate import recording
from ablate.errors import StoreError
from ablate.executors.base import Executor
from ablate.messages import make_task

if TYPE_CHECKING:  # ablate.store imports SQLAlchemy (~0.2 s): `ablate run` needs the slots first
    from ablate.store import Run, Store

HEARTBEAT_EVERY = 5.0
# Default of ``ablate run --stall-timeout``: a started run that reports nothing (no batch,
# epoch or phase) for this long is stopped as ``stalled``. Workers report progress about
# every second while batches run (``worker.Pulse``), so only a hang comes near it; a
# slow data load before the first batch is the longest silence a healthy run has.
STALL_TIMEOUT = 30 * 60.0


# ---------------------------------------------------------------------------- the loop


@dataclass
class Summary:
    finished: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    elsewhere: int = 0  # runs of this sweep running under another coordinator
    retried: int = 0  # out-of-memory runs requeued with fewer runs sharing their GPU
    lost: int = 0  # results dropped because the run had been requeued meanwhile

    @property
    def total(self) -> int:
        return sum(self.finished.values())


class Planner(Protocol):
    """Proposes runs as results come back (``ablate search``'s Optuna study) instead of a
    fixed list. The sweep asks it for work whenever a slot is free and nothing it already
    has is pending, and tells it every valid score and every end; it never writes the store
    itself except to add the pending runs it proposes."""

    def propose(self) -> int | None:
        """The id of one more pending run to execute, or None when there is none for now."""

    def on_valid(self, run_id: int, event: dict) -> bool:
        """A run's valid score after an epoch; True stops the run there (``pruned``)."""

    def on_finished(self, run_id: int, status: str) -> None:
        """A run ended (its result is already in the store)."""


class Sweep:
    """One coordinator's pass over a set of runs."""

    def __init__(self, store: Store, run_ids: list[int], executor: Executor, owner: str, workdir: Path,
                 timeout: float | None = None, view=None, git: str | None = None, keep_checkpoints: bool = False,
                 stall_timeout: float | None = None, planner: Planner | None = None, fuse: int = 1,
                 adopted: list | None = None):
        self.planner = planner
        self.fuse = fuse if planner is None else 1  # a search trial answers its pruner alone
        self._partners = None  # ablate.sharing.Partners for the current group size
        self.store, self.run_ids, self.executor, self.owner = store, run_ids, executor, owner
        self.workdir, self.timeout, self.view, self.git = workdir, timeout, view, git
        self.stall_timeout = stall_timeout
        self.keep_checkpoints = keep_checkpoints
        self.in_flight: dict[int, dict] = {}  # run id -> {"task", "started", "gpu"}
        self.summary = Summary()
        # (run, sweep record) of runs a dead coordinator's cluster jobs still train: watched
        # here instead of trained again (the executor reads their jobs' files)
        self.adopted = list(adopted or [])

    def _adopt(self) -> None:
        for run, record in self.adopted:
            if not self.store.adopt(run.id, run.owner, self.owner):
                continue
            task = make_task(run, self.workdir, self.keep_checkpoints)
            if self.planner is not None:
                task["verdicts"] = True
            self.executor.adopt(run, task, record)
            self.in_flight[run.id] = {"task": task, "started": time.monotonic(), "run": run, "group": 1}
            if self.view:
                self.view.queued_to_running(run)

    def _fill(self) -> None:
        while self.executor.capacity() > 0:
            run = self.store.claim(self.run_ids, self.owner)
            if run is None:
                more = self.planner.propose() if self.planner is not None else None
                if more is None:
                    return
                self.run_ids.append(more)
                continue
            runs = [run, *self._claim_partners(run)]
            tasks = [make_task(r, self.workdir, self.keep_checkpoints) for r in runs]
            if self.planner is not None:
                tasks[0]["verdicts"] = True  # the worker waits for an answer to each valid event
            self.executor.submit(tasks[0] if len(tasks) == 1 else {"members": tasks})
            for r, task in zip(runs, tasks):
                self.in_flight[r.id] = {"task": task, "started": time.monotonic(), "run": r, "group": len(runs)}
                if self.view:
                    self.view.queued_to_running(r)

    def _claim_partners(self, run: Run) -> list[Run]:
        """Pending runs that may train side by side with ``run`` (``--fuse``), claimed."""
        if self._partners is None or self._partners.size != self.fuse:
            from ablate.sharing import Partners

            self._partners = Partners(self.store, self.run_ids, self.owner, self.fuse)
        return self._partners.claim(run)

    def _handle(self, ev: dict) -> None:
        rid, kind = ev.get("run_id"), ev.get("type")
        if rid not in self.in_flight:
            return
        self.in_flight[rid]["progress_at"] = time.monotonic()  # the stall clock starts when the run does
        if kind in ("started", "progress", "epoch"):
            self.in_flight[rid]["where"] = _where(ev)
        if kind == "started":
            self.in_flight[rid]["device"] = ev.get("device")
        if kind == "finished":
            self._finish(rid, ev)
        else:
            recording.apply(self.store, ev, owner=self.owner, executor=self.executor.name, git=self.git)
        if kind == "valid" and self.in_flight[rid]["task"].get("verdicts"):
            self.executor.answer(rid, self.planner.on_valid(rid, ev))
        if self.view:
            self.view.event(ev)

    def _finish(self, rid: int, ev: dict) -> None:
        from ablate.store import Status

        status = Status(ev["status"])
        info = self.in_flight.pop(rid)
        if not recording.apply(self.store, {**ev, "type": "finished", "run_id": rid}, owner=self.owner):
            # This coordinator was taken for dead and the run requeued (possibly already
            # rerun by another): its late result is dropped, never written over the new one.
            self.summary.lost += 1
            return
        if status is Status.OOM and info.get("group", 1) > 1:
            # a fused group ran out of memory: its runs go again in groups half as large
            self.fuse = min(self.fuse, max(1, info["group"] // 2))
            self.store.requeue([rid], retry=True)
            self.summary.retried += 1
            return
        if status is Status.OOM:
            device = str(info.get("device") or "")
            gpu = device.split("+")[0].removeprefix("cuda:")  # "cuda:0+mps" is GPU 0
            if device.startswith("cuda:") and self.executor.shrink(gpu):
                self.store.requeue([rid], retry=True)  # again, with one run fewer on that GPU
                self.summary.retried += 1
                return
        if self.planner is not None:
            self.planner.on_finished(rid, status.value)
        self.summary.finished[status.value] = self.summary.finished.get(status.value, 0) + 1

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for rid, info in list(self.in_flight.items()):
            if self.timeout and now - info["started"] > self.timeout:
                self.executor.cancel(rid, "timeout", f"timed out after {self.timeout:g} s")
            elif self.stall_timeout and now - info.get("progress_at", now) > self.stall_timeout:
                # a run that has not said "started" may still wait for its worker's imports: not counted
                self.executor.cancel(rid, "stalled", f"no progress for {self.stall_timeout:g} s "
                                                     f"(last: {info.get('where')}); its worker was killed")

    def run(self) -> Summary:
        from sqlalchemy.exc import DBAPIError

        from ablate.store import Status

        last_beat = 0.0
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._adopt()
            while True:
                self._fill()
                if not self.in_flight:
                    break
                for ev in self.executor.poll(0.5):
                    self._handle(ev)
                self._check_timeouts()
                if time.monotonic() - last_beat > HEARTBEAT_EVERY:
                    self.store.heartbeat(self.owner)
                    last_beat = time.monotonic()
                if self.view:
                    self.view.refresh()
        except DBAPIError as err:  # e.g. "database or disk is full": stop cleanly, lose nothing stored
            self.executor.shutdown(kill=True)
            first = str(err.orig).splitlines()[0] if err.orig is not None else type(err).__name__
            raise StoreError(f"cannot write to the store {self.store.db}: {first} "
                             f"({len(self.in_flight)} unfinished run(s) are requeued by the next ablate run)") from None
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self.executor.shutdown(kill=True)
            for rid in list(self.in_flight):
                self._finish(rid, {"status": "interrupted", "error": "interrupted: the sweep was stopped (Ctrl-C/SIGTERM)"})
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.executor.shutdown()
        counts = self.store.counts(self.run_ids)
        self.summary.elsewhere = counts.get(Status.RUNNING.value, 0)
        return self.summary


def _where(ev: dict) -> str:
    """Where a run was at this progress or epoch event, for a stalled run's error."""
    epoch = ev.get("epoch")
    if ev.get("type") == "started":
        return "data preparation"
    if ev.get("type") == "epoch":
        return f"epoch {epoch + 1} trained"
    phase = ev.get("phase")
    if phase not in ("train", "valid", "test"):
        return f"{phase} set-up"
    batches = f"/{ev['batches']}" if ev.get("batches") is not None else ""
    return f"{phase} batch {ev.get('batch')}{batches}" + ("" if epoch is None else f" of epoch {epoch + 1}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt

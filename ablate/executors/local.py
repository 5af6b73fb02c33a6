"""Run tasks in warm worker processes on this machine, one worker per slot.

A slot is a device (a GPU id, or the CPU) plus a thread budget. Each slot owns one
long-lived worker process (``multiprocessing`` *spawn*, so no CUDA or RecBole state is
inherited from the coordinator) that keeps torch and RecBole imported and the parsed
dataset cached between runs. Events come back over the slot's pipe; the process
sentinel tells us the moment a worker dies (``kill -9``, the OOM killer, a segfault),
and its run is reported ``interrupted`` — detected, not guessed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing.connection import wait

from ablate.devices import Slot
from ablate.executors.base import Executor
from ablate.executors.packing import AutoPack
from ablate.messages import Work, ended


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, slots: list[Slot], cache: bool = True, auto: AutoPack | None = None):
        self.slots = slots
        self.cache = cache
        self.auto = auto  # --per-gpu auto: grow each GPU's slots as runs report their memory
        # CPU threads per GPU, split between however many slots that GPU ends up with
        self._thread_budget: dict = {}
        for s in slots:
            if s.gpu is not None:
                self._thread_budget[s.gpu] = self._thread_budget.get(s.gpu, 0) + (s.threads or 1)
        self._ctx = mp.get_context("spawn")
        self._pending: list[dict] = []

    # -------------------------------------------------------------- processes

    def _start(self, slot: Slot) -> None:
        from ablate import serve

        parent, child = self._ctx.Pipe()
        # a worker under MPS opens its context on its GPU at start
        proc = self._ctx.Process(target=serve.serve, args=(child, slot.threads, self.cache, slot.gpu), daemon=True,
                                 name=f"ablate-worker-{slot.device}")
        proc.start()
        child.close()
        slot.process, slot.conn = proc, parent

    def prestart(self, n: int) -> None:
        """Start up to ``n`` workers now, so their torch/RecBole imports (seconds) overlap
        with the coordinator's own start-up instead of following it."""
        for slot in [s for s in self.slots if s.enabled][:max(0, n)]:
            if not self._alive(slot):
                self._start(slot)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until every started worker has said ``ready``, or died, or ``timeout``.

        Used under ``--mps``, where a worker loads its CUDA libraries before it is ready and
        no run may train on the GPU meanwhile (see ``ablate.serve._load_cuda_libraries``). Other
        events are kept for the next ``poll``, which also reports a worker that died.
        """
        import time

        deadline = time.monotonic() + timeout
        waiting = {id(s): s for s in self.slots if s.conn is not None}
        while waiting and (left := deadline - time.monotonic()) > 0:
            by_handle = {h: s for s in waiting.values() for h in (s.conn, s.process.sentinel)}
            for h in wait(list(by_handle), timeout=left):
                slot = by_handle[h]
                if id(slot) not in waiting:
                    continue
                if h is slot.conn:
                    try:
                        ev = slot.conn.recv()
                    except (EOFError, OSError):
                        ev = None
                    if ev is not None and ev.get("type") != "ready":
                        self._pending.append(ev)
                        continue
                del waiting[id(slot)]  # ready, or dead

    def _alive(self, slot: Slot) -> bool:
        return slot.process is not None and slot.process.is_alive()

    # -------------------------------------------------------------- interface

    def capacity(self) -> int:
        return sum(1 for s in self.slots if s.enabled and not s.runs)

    def submit(self, task: Work) -> None:
        """Send a task, or a fused group (``{"members": [task, ...]}``), to a free slot."""
        slot = next(s for s in self.slots if s.enabled and not s.runs)
        if not self._alive(slot):
            self._start(slot)
        place = {"gpu": slot.gpu, "threads": slot.threads}
        if "members" in task:
            task = {"members": [dict(t, **place) for t in task["members"]]}
            slot.runs = [t["run_id"] for t in task["members"]]
        else:
            task = dict(task, **place)
            slot.runs = [task["run_id"]]
        slot.conn.send(task)

    def poll(self, timeout: float) -> list[dict]:
        events, self._pending = self._pending, []
        busy = [s for s in self.slots if s.conn is not None]
        if not busy:
            return events
        handles = {}
        for s in busy:
            handles[s.conn] = s
            handles[s.process.sentinel] = s
        ready = wait(list(handles), timeout=0 if events else timeout)
        for h in ready:
            slot = handles[h]
            if h is slot.conn:
                events.extend(self._drain(slot))
        for h in ready:
            slot = handles[h]
            if slot.process is not None and h is slot.process.sentinel:
                events.extend(self._drain(slot))
                events.extend(self._died(slot))
        return events

    def _drain(self, slot: Slot) -> list[dict]:
        out = []
        try:
            while slot.conn is not None and slot.conn.poll():
                ev = slot.conn.recv()
                if self.auto is not None and ev.get("peak_mem_mb") is not None and slot.gpu is not None:
                    self.observe_peak(slot.gpu, ev["peak_mem_mb"])
                out.append(ev)
                if ev.get("type") == "finished" and ev.get("run_id") in slot.runs:
                    slot.runs.remove(ev["run_id"])
                    if slot.runs:
                        continue
                    if not self.cache or ev.get("retire"):
                        # --no-warm, or a worker whose CUDA context is lost: it ends; never hand
                        # it a task. It reported only after closing the run's log, so nothing of
                        # the run is lost by not waiting for its interpreter teardown (~1 s).
                        self._retire(slot, grace=0.0)
                        return out
        except (EOFError, OSError):
            pass
        return out

    def _retire(self, slot: Slot, grace: float = 5.0) -> None:
        """Give a worker ``grace`` seconds to exit on its own, then kill it; free the slot.
        A one-run (--no-warm) worker exits right after sending its result."""
        slot.process.join(timeout=grace)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(timeout=5)
        with _quiet():
            slot.conn.close()
        slot.process, slot.conn = None, None

    def _died(self, slot: Slot) -> list[dict]:
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        runs, slot.runs = slot.runs, []
        with _quiet():
            slot.conn.close()
        slot.process, slot.conn = None, None
        return [ended(run_id, "interrupted", f"worker process died ({_signal_name(code)})") for run_id in runs]

    def cancel(self, run_id: int, status: str, error: str) -> None:
        """Stop a run by killing its worker. The other runs of its fused group lose their
        worker too: they end ``interrupted`` (the next ``ablate run`` trains them again)."""
        for slot in self.slots:
            if run_id in slot.runs and slot.process is not None:
                with _quiet():
                    os.kill(slot.process.pid, signal.SIGKILL)
                slot.process.join(timeout=5)
                with _quiet():
                    slot.conn.close()
                runs, slot.process, slot.conn, slot.runs = slot.runs, None, None, []
                self._pending.append(ended(run_id, status, error))
                self._pending.extend(ended(other, "interrupted", f"stopped with its fused group: run {run_id} {status} ({error})")
                                     for other in runs if other != run_id)

    def answer(self, run_id: int, stop: bool) -> None:
        """The verdict a worker waits for after each valid event of a search trial."""
        for slot in self.slots:
            if run_id in slot.runs and slot.conn is not None:
                with _quiet():
                    slot.conn.send({"type": "verdict", "run_id": run_id, "stop": bool(stop)})
                return

    def shrink(self, gpu) -> bool:
        same = [s for s in self.slots if s.gpu == gpu and s.enabled]
        if len(same) <= 1:
            return False
        idle = [s for s in same if not s.runs] or same
        idle[-1].enabled = False
        if self.auto is not None:
            self.auto.ceiling[str(gpu)] = len(same) - 1  # measured too optimistic: never grow back
        return True

    # -------------------------------------------------------------- --per-gpu auto

    def observe_peak(self, gpu, peak_mb: float) -> int:
        """Record a run's GPU memory and add slots on that GPU while they fit; returns
        how many slots the GPU now has. New slots start their worker on first use."""
        self.auto.observe(str(gpu), peak_mb)
        return self.grow(gpu)

    def grow(self, gpu) -> int:
        same = [s for s in self.slots if s.gpu == gpu and s.enabled]
        want = self.auto.want(str(gpu))
        if same and want > len(same):
            template = same[0]
            self.slots.extend(Slot(gpu=template.gpu, threads=template.threads, label=template.label)
                              for _ in range(want - len(same)))
            threads = max(1, self._thread_budget.get(gpu, 1) // want)
            for s in self.slots:
                if s.gpu == gpu:
                    s.threads = threads  # sent with each task; the worker applies it per run
            return want
        return len(same)

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers. An idle worker holds nothing worth waiting for (every result
        is already in the coordinator's hands, and a worker reports a run finished only
        after closing its log), so it is killed at once: tearing down torch took ~1.6 s,
        and a 0.3 s grace period for a clean exit was always spent (no worker got out in
        time). A busy one, without ``kill``, finishes its run."""
        for slot in self.slots:
            if slot.process is None:
                continue
            if kill or not slot.runs:
                with _quiet():
                    slot.process.kill()
            else:
                with _quiet():
                    slot.conn.send(None)
        for slot in self.slots:
            if slot.process is None:
                continue
            busy = bool(slot.runs)
            self._retire(slot, grace=10 if busy and not kill else 5)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (OSError, EOFError, ValueError, ProcessLookupError))

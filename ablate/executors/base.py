"""The one interface every executor implements, so the scheduler never cares where runs go.

An executor accepts *tasks* (plain dicts from :func:`ablate.scheduler.make_task`) while it
has capacity, and hands back *events* (plain dicts from :mod:`ablate.worker`) when
polled. When a run can no longer finish by itself — its worker died, it was cancelled,
its job was preempted — the executor reports a synthetic ``finished`` event with the
right status, so the scheduler has exactly one path that ends a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Executor(ABC):
    name: str = "executor"

    @abstractmethod
    def capacity(self) -> int:
        """How many more tasks can be submitted right now."""

    @abstractmethod
    def submit(self, task: dict) -> None:
        """Start a task. The executor fills in ``task['gpu']`` from the slot it picks."""

    @abstractmethod
    def poll(self, timeout: float) -> list[dict]:
        """Events that arrived within ``timeout`` seconds (possibly none)."""

    @abstractmethod
    def cancel(self, run_id: int, status: str, error: str) -> None:
        """Stop a run now; a ``finished`` event with ``status`` follows from ``poll``."""

    @abstractmethod
    def shutdown(self, kill: bool = False) -> None:
        """Release workers/jobs. ``kill`` stops running work instead of letting it end."""

    def answer(self, run_id: int, stop: bool) -> None:
        """Reply to a run's ``valid`` event when its task asked for verdicts (``ablate
        search``): ``stop`` ends it there as ``pruned``. Only the local executor can."""
        raise NotImplementedError(f"the {self.name} executor cannot stop a run after an epoch")

    def adopt(self, run, task, record: dict) -> None:
        """Watch a run another coordinator started and left running (its cluster job goes
        on). Only an executor whose runs outlive their coordinator can."""
        raise NotImplementedError(f"the {self.name} executor cannot adopt another coordinator's runs")

    def shrink(self, gpu) -> bool:
        """Run one task fewer on ``gpu`` from now on (after an out-of-memory error).
        Returns False where there is nothing to shrink."""
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(kill=exc[0] is not None)

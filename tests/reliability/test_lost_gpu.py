"""A worker whose CUDA context is lost (a fault on the GPU: sticky, and under MPS it ends
every client of that GPU) reports its run with the real error and then ends, and the
executor never hands it another run.

Seen on an H200 under ``--mps``: the worker's cleanup call (``torch.cuda.empty_cache``)
raised the sticky error, the process died, and the store said only "worker process died
(exit code 1)". A faulted GPU cannot exist here, so the CUDA calls are stood in for.
"""

from __future__ import annotations

import pytest

from ablate import serve, worker
from ablate.executors.local import LocalExecutor
from ablate.executors.packing import AutoPack

FAULT = "CUDA error: an illegal instruction was encountered"


@pytest.fixture(autouse=True)
def _recbole_patched():
    from ablate import compat

    compat.apply()  # what every worker process does first


@pytest.fixture
def faulted_gpu(monkeypatch):
    import torch

    def synchronize(*_a, **_k):
        raise torch.AcceleratorError(FAULT) if hasattr(torch, "AcceleratorError") else RuntimeError(FAULT)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)


def _task(tmp_path):
    """A run that fails fast, before any training: its dataset has no files."""
    return {"run_id": 7, "run_dir": str(tmp_path / "run7"), "gpu": 0, "model": "BPR",
            "config": {"dataset": "no-such-data", "data_path": str(tmp_path)}}


def test_a_run_on_a_lost_context_reports_its_own_error_and_retires_the_worker(tmp_path, faulted_gpu):
    events: list[dict] = []
    ev = worker.execute(_task(tmp_path), events.append)
    assert ev is events[-1] and ev["type"] == "finished"
    assert ev["status"] == "failed" and ev["retire"] is True
    assert "no-such-data" in ev["error"]  # the run's own error comes first ...
    assert ev["error"].endswith(worker.LOST_CONTEXT)  # ... then why every other run on the GPU failed too
    assert "run failed" in (tmp_path / "run7" / "run.log").read_text()


def test_a_healthy_gpu_keeps_the_worker(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(worker, "_release_gpu", lambda: True)
    ev = worker.execute(_task(tmp_path), [].append)
    assert ev["status"] == "failed" and "retire" not in ev
    assert worker.LOST_CONTEXT not in ev["error"]


class _Pipe:
    """The coordinator's end as the worker sees it: tasks to receive, events sent."""

    def __init__(self, tasks):
        self.tasks, self.sent = list(tasks), []

    def recv(self):
        if not self.tasks:
            raise AssertionError("the worker asked for another task")
        return self.tasks.pop(0)

    def send(self, event):
        self.sent.append(event)


def test_the_worker_loop_ends_after_a_lost_context_without_asking_for_more(tmp_path, faulted_gpu):
    pipe = _Pipe([_task(tmp_path), _task(tmp_path)])
    serve._serve_tasks(pipe, cache=True)
    assert len(pipe.tasks) == 1  # the second task was never taken
    assert [e["type"] for e in pipe.sent] == ["started", "finished"]


def test_the_executor_retires_a_worker_that_lost_its_context(stand_in_worker):
    slot, child = stand_in_worker(run_id=7)
    ex = LocalExecutor([slot])
    proc = slot.process
    child.send({"type": "finished", "run_id": 7, "status": "failed", "error": "x" + worker.LOST_CONTEXT, "retire": True})
    events = ex.poll(timeout=5)
    assert [e["status"] for e in events] == ["failed"]  # reported once, as failed, not as a dead worker
    assert slot.process is None and slot.run_id is None and not proc.is_alive()
    assert ex.capacity() == 1  # the slot is free; its next run starts a fresh worker


def test_no_warm_workers_still_report_their_peak_to_auto_packing(stand_in_worker):
    slot, child = stand_in_worker(run_id=7)
    ex = LocalExecutor([slot], cache=False, auto=AutoPack({"0": 81559.0}))
    child.send({"type": "finished", "run_id": 7, "status": "done", "peak_mem_mb": 15000.0})
    ex.poll(timeout=5)
    assert ex.auto.peak_mb == {"0": 15000.0}
    assert len([s for s in ex.slots if s.gpu == "0"]) == 4  # 0.8 * 81559 / 15500

"""CPU sweeps split the cores between workers: the thread count make_slots gives a slot
is the one torch uses inside that slot's worker while it trains."""

from __future__ import annotations

import time

from ablate.executors.local import LocalExecutor
from ablate.devices import make_slots


def test_make_slots_splits_cores():
    assert [s.threads for s in make_slots([], 1, 2, [], cores=2)] == [1, 1]
    assert [s.threads for s in make_slots([], 1, 1, [], cores=2)] == [2]
    assert [s.threads for s in make_slots([], 1, 3, [], cores=16)] == [5, 5, 5]


def test_worker_trains_with_the_slot_thread_count(tmp_path):
    slots = make_slots([], 1, 2, [], cores=2)
    ex = LocalExecutor(slots[:1])
    config = {"dataset": "ml-100k", "epochs": 1, "train_batch_size": 4096, "embedding_size": 8, "topk": [10],
              "metrics": ["Recall"], "valid_metric": "Recall@10", "seed": 1, "model": "BPR",
              "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}}
    ex.submit({"run_id": 1, "model": "BPR", "config": config, "run_dir": str(tmp_path / "r1")})
    events, deadline = [], time.monotonic() + 600
    try:
        while not any(e["type"] == "finished" for e in events) and time.monotonic() < deadline:
            events += ex.poll(1.0)
    finally:
        ex.shutdown()
    finished = next(e for e in events if e["type"] == "finished")
    assert finished["status"] == "done", finished.get("error")
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["threads"] for e in epochs] == [1]
    assert epochs[0]["peak_mem_mb"] is None  # CPU run: no GPU memory to report

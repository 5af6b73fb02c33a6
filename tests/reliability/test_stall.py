"""The stall watchdog: a run that reports no progress for ``--stall-timeout`` ends
``stalled``, its worker is killed and replaced, the sweep goes on, and the next
``ablate run`` runs it again; workers report progress at batch granularity."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from ablate import serve, worker
from ablate.catalog import recbole_dir

from tests.reliability.reliability_helpers import ablate_call, ablate_proc, pid_alive, runs_by_name, training, wait_for

# Three rows: "stuck" reads its saved dataset from a path whose reads block (a named pipe
# that nobody writes, as a hung network mount would), "frozen" trains until the test stops
# its worker process (SIGSTOP), "quick" must still end done. Settings differ a little so
# that each row is a run of its own (dataset_save_path is not part of a run's key).
ROWS = {
    "stuck": {"model": "BPR", "params": {"dataset_save_path": "mount/ml-100k.pth", "embedding_size": 16}},
    "frozen": {"model": "BPR", "params": {"epochs": 20, "eval_step": 20}},
    "quick": {"model": "BPR"},
}


def test_stalled_runs_are_killed_the_sweep_goes_on_and_the_next_run_retries_them(tmp_path, db, make_spec):
    spec = make_spec("stall", baselines=ROWS)
    (tmp_path / "mount").mkdir()
    fifo = tmp_path / "mount" / "ml-100k.pth"
    os.mkfifo(fifo)

    proc = ablate_proc("run", str(spec), "--db", db, "--jobs", "2", "--stall-timeout", "12s", cwd=tmp_path)
    frozen = wait_for(lambda: training(db, "frozen"), 180, "the frozen run to train an epoch", proc)
    os.kill(frozen["pid"], signal.SIGSTOP)  # its worker hangs mid-training: no more batches, no events
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if pid_alive(frozen["pid"]):
            os.kill(frozen["pid"], signal.SIGKILL)
    assert proc.returncode == 1, (out, err)  # not everything ended done
    assert "Traceback" not in out + err, err

    runs = runs_by_name(db)
    assert runs["stuck"]["status"] == "stalled", runs["stuck"]
    assert runs["stuck"]["error"] == "no progress for 12 s (last: data preparation); its worker was killed"
    assert runs["frozen"]["status"] == "stalled", runs["frozen"]
    assert runs["frozen"]["error"].startswith("no progress for 12 s (last: ")
    assert runs["frozen"]["error"] != runs["stuck"]["error"]  # it had got past its data: a batch or an epoch
    assert runs["quick"]["status"] == "done", runs["quick"]
    for name in ("stuck", "frozen"):  # each stalled worker is gone, and the quick run had a worker of its own
        assert not pid_alive(runs[name]["pid"]), name
        assert runs[name]["pid"] != runs["quick"]["pid"]
    assert "finished: 1 done, 2 stalled" in out, out
    assert "] stalled     #1 stuck    no progress for 12 s (last: data preparation)" in out, out

    status = ablate_call("status", "stall", "--db", db, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "stall: 3 runs, 1 done, 2 stalled" in status.stdout, status.stdout

    # The mount came back (no saved dataset there: RecBole builds it) and the frozen
    # worker is long gone: the next `ablate run` retries both stalled runs, not the done one.
    fifo.unlink()
    again = ablate_call("run", str(spec), "--db", db, "--jobs", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stall: 3 runs, 1 done, 2 to run" in again.stdout, again.stdout
    runs = runs_by_name(db)
    assert {n: (r["status"], r["attempts"]) for n, r in runs.items()} == {
        "stuck": ("done", 2), "frozen": ("done", 2), "quick": ("done", 1)}
    assert runs["frozen"]["epoch"] == 19


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "recbole-loop"])
def test_workers_report_progress_at_batch_granularity(tmp_path, fast_path):
    """With no interval between them, a progress event per batch, in training (each epoch
    from batch 0 to the last) and in evaluation, through either training loop."""
    from ablate import compat

    compat.apply()  # what every worker process does first
    config = {"dataset": "ml-100k", "data_path": str(recbole_dir() / "dataset_example"), "epochs": 2,
              "embedding_size": 8, "train_batch_size": 8192, "eval_batch_size": 409600, "topk": [10],
              "metrics": ["NDCG"], "valid_metric": "NDCG@10", "fast_path": fast_path}
    events: list[dict] = []
    task = {"run_id": 1, "run_dir": str(tmp_path / "run"), "model": "BPR", "config": config, "beat_every": 0}
    done = worker.execute(task, events.append, cache=False)
    assert done["status"] == "done", done.get("error")

    progress = [e for e in events if e["type"] == "progress"]
    assert events[0]["type"] == "started" and progress[0]["phase"] == "model"
    train = [(e["epoch"], e["batch"], e["batches"]) for e in progress if e["phase"] == "train"]
    n = train[0][2]
    assert n == 10  # ml-100k's 80k training interactions in batches of 8192
    assert train == [(epoch, b, n) for epoch in (0, 1) for b in range(n + 1)]
    evals = Counter((e["phase"], e["epoch"]) for e in progress if e["phase"] in ("valid", "test"))
    assert set(evals) == {("valid", 0), ("valid", 1), ("test", 1)}
    assert all(count >= 2 for count in evals.values())  # the phase's start, then its batches
    epoch_events = [e for e in events if e["type"] == "epoch"]
    assert [(e["epoch"], e["epochs"], e["validates"]) for e in epoch_events] == [(0, 2, True), (1, 2, True)]


def test_a_slurm_job_writes_no_progress_events(tmp_path):
    """A Slurm job appends its events to a file on shared storage, with an fsync each: no
    per-second progress events there (Slurm's own time limit stops a hung job)."""
    config = {"dataset": "ml-100k", "data_path": str(recbole_dir() / "dataset_example"), "epochs": 1,
              "embedding_size": 8, "train_batch_size": 8192, "eval_batch_size": 409600, "topk": [10],
              "metrics": ["NDCG"], "valid_metric": "NDCG@10"}
    path = tmp_path / "events.jsonl"
    done = serve.run_task_standalone({"run_id": 1, "run_dir": str(tmp_path / "run"), "model": "BPR", "config": config},
                                      str(path))
    assert done["status"] == "done", done.get("error")
    kinds = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    assert kinds == ["started", "epoch", "valid", "finished"]

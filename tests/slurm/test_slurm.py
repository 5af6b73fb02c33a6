"""Sweeps through the Slurm executor on submitit's local cluster (real job subprocesses,
the same pickled job and result files as on Slurm): same numbers as the local executor,
killed jobs come back as interrupted and run again, collect is idempotent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.store import Store

from tests.slurm.slurm_helpers import SLURM_ARGS, cli, metrics_by_key, wait_dead, wait_for_event

pytestmark = pytest.mark.usefixtures("local_cluster")


def dump(db: Path) -> list:
    """Every stored fact a collect could change: runs, metrics and epochs."""
    s = Store(str(db))
    rows = []
    for r in s.runs():
        rows.append((r.id, r.status, r.error, r.epoch, r.best_epoch, r.attempts, r.started_at, r.ended_at, r.wall_seconds,
                     r.heartbeat_at, r.job_id, r.executor, r.device, r.pid,
                     sorted((m.split, m.name, m.value) for m in r.metrics),
                     [(e.epoch, e.losses, e.train_seconds, e.valid_score, e.valid) for e in r.epochs]))
    return rows


def test_waiting_sweep_killed_job_is_requeued_and_numbers_match_local(spec, tmp_path, reference):
    """`ablate run --executor slurm` waits and collects; a job killed mid-run ends its run
    as interrupted, and the next run resubmits it; every metric equals the local run's."""
    db = tmp_path / "slurm.db"
    folder = tmp_path / ".ablate" / "slurm"
    env = dict(os.environ, ABLATE_SUBMITIT_CLUSTER="local")
    coordinator = subprocess.Popen([sys.executable, "-c", "from ablate.cli import main; main()", "run", str(spec), "--db", str(db), *SLURM_ARGS],
                                   env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    try:
        started = wait_for_event(folder, 2, "started")
        os.kill(started["pid"], signal.SIGKILL)  # the job's training process, mid-run
        out, _ = coordinator.communicate(timeout=300)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 1, out
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert runs[1].status == "done" and runs[1].executor == "slurm" and runs[1].job_id
    assert runs[2].status == "interrupted", (runs[2].status, runs[2].error, out)
    assert f"slurm job {runs[2].job_id} ended" in runs[2].error
    assert runs[2].owner.startswith("slurm:")

    status = cli("status", spec, "--db", db)
    assert "1 done" in status.output and "1 interrupted" in status.output

    first_job = runs[2].job_id
    cli("run", spec, "--db", db, *SLURM_ARGS)
    again = Store(str(db)).get_run(2)
    assert again.status == "done" and again.attempts == 2 and again.job_id != first_job
    assert metrics_by_key(db) == reference  # every valid and test metric, exactly


def test_no_wait_then_collect_packed_job_killed_run_idempotent(spec, tmp_path, reference):
    """`--no-wait` submits and returns; `ablate collect` later writes the results, once.
    Both runs share one job (--per-gpu 2); killing one run's process leaves the other's
    result intact and the killed one interrupted, requeued by the next `ablate run`."""
    db = tmp_path / "slurm.db"
    folder = tmp_path / ".ablate" / "slurm"
    res = cli("run", spec, "--db", db, *SLURM_ARGS, "--per-gpu", "2", "--no-wait")
    assert "submitted 2 run(s) as 1 job(s)" in res.output, res.output
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert runs[1].status == runs[2].status == "running"
    job_id = runs[1].job_id
    assert job_id and runs[2].job_id == job_id

    running = cli("status", spec, "--db", db).output
    assert "job" in running and job_id in running and "RUNNING" in running, running

    started = wait_for_event(folder, 2, "started")
    os.kill(started["pid"], signal.SIGKILL)
    wait_for_event(folder, 1, "finished", timeout=300)
    wait_dead(int(job_id), timeout=120)  # submitit-local job id = its controller's pid

    cli("collect", spec, "--db", db)
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert runs[1].status == "done" and runs[1].device == "cpu" and runs[1].started_at is not None
    assert runs[2].status == "interrupted" and job_id in runs[2].error
    assert metrics_by_key(db) == {k: v for k, v in reference.items() if k == runs[1].key}

    before = dump(db)
    res = cli("collect", spec, "--db", db)
    assert "nothing to collect" in res.output
    assert dump(db) == before  # collecting twice writes nothing new

    cli("run", spec, "--db", db, *SLURM_ARGS, "--no-wait")
    cli("collect", spec, "--db", db, "--wait", "--every", "0.5")
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert runs[2].status == "done" and runs[2].attempts == 2
    assert metrics_by_key(db) == reference


def test_a_requeued_job_does_not_train_a_run_that_already_finished(tmp_path):
    """Slurm requeues with SIGTERM and SIGKILL KillWait later; a run that ends in between
    has written its ``done`` event, yet the job starts again under the same id. The new
    start returns that event and trains nothing (the task here could not even train: its
    model does not exist)."""
    import json

    from ablate.executors.slurm import read_events, run_job

    events = tmp_path / "events"
    events.mkdir()
    path = events / f"events.pid{os.getpid()}.jsonl"  # the job id outside submitit
    done = {"type": "finished", "run_id": 7, "status": "done", "metrics": {"test": {"recall@10": 0.25}}}
    path.write_text(json.dumps({"type": "job", "run_id": 7}) + "\n" + json.dumps(done) + "\n")
    task = {"run_id": 7, "model": "NoSuchModel", "config": {"model": "NoSuchModel", "dataset": "ml-100k"},
            "run_dir": str(tmp_path / "runs" / "7"), "events_dir": str(events), "use_gpu": False}
    assert run_job([task]) == [done]
    assert read_events(path)[0] == [{"type": "job", "run_id": 7}, done]  # nothing appended
    assert not (tmp_path / "runs").exists()
    # a run whose earlier start did not finish it (killed mid-run) trains again
    path.write_text(json.dumps({"type": "job", "run_id": 7}) + "\n")
    (result,) = run_job([task])
    assert result["status"] == "failed" and result["run_id"] == 7

"""kill -9 of a worker, and of the coordinator, in the middle of a real sweep."""

from __future__ import annotations

import os
import signal

from reliability_helpers import ablate_call, ablate_proc, pid_alive, query, runs_by_name, two_rows, wait_for


def _slow_mid_training(db):
    """The slow run is training (its worker's pid and at least one epoch are stored)."""
    slow = runs_by_name(db).get("slow")
    if slow and slow["status"] == "running" and slow["pid"] and slow["epoch"] is not None:
        return slow
    return None


def test_worker_kill9_marks_interrupted_sweep_goes_on_next_run_retries(tiny_spec, db, tmp_path):
    # --jobs 1: the two runs must go one after the other (the CPU default is one run per core)
    spec = two_rows(tiny_spec, slow_first=True)  # the quick run then proves the sweep goes on
    proc = ablate_proc("run", str(spec), "--db", db, "--jobs", "1", cwd=tmp_path)
    slow = wait_for(lambda: _slow_mid_training(db), 180, "the slow run to train an epoch", proc)
    os.kill(slow["pid"], signal.SIGKILL)  # the worker, not the coordinator
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, (out, err)  # not everything ended done
    assert "Traceback" not in out + err
    runs = runs_by_name(db)
    assert runs["slow"]["status"] == "interrupted"
    assert runs["slow"]["error"] == "worker process died (signal SIGKILL)"
    assert runs["quick"]["status"] == "done"  # the sweep went on with a fresh worker
    assert query(db, "SELECT count(*) FROM metrics WHERE run_id=? AND split='test'", runs["quick"]["id"])[0][0] == 2

    again = ablate_call("run", str(spec), "--db", db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 done, 1 to run" in again.stdout
    runs = runs_by_name(db)
    assert runs["slow"]["status"] == "done" and runs["slow"]["attempts"] == 2 and runs["slow"]["epoch"] == 3
    assert runs["quick"]["attempts"] == 1  # not run again


def test_coordinator_kill9_orphan_exits_stale_rows_requeued_nothing_twice(two_spec, db, tmp_path):
    proc = ablate_proc("run", str(two_spec), "--db", db, "--jobs", "1", cwd=tmp_path)
    slow = wait_for(lambda: _slow_mid_training(db), 180, "the slow run to train an epoch", proc)
    quick_before = runs_by_name(db)["quick"]
    assert quick_before["status"] == "done"
    os.kill(proc.pid, signal.SIGKILL)  # the coordinator only
    proc.communicate(timeout=30)

    # The orphaned worker notices its coordinator is gone and exits (it never writes the store):
    # at once by PDEATHSIG, else within a second by its watcher; the bound is for a busy machine.
    wait_for(lambda: not pid_alive(slow["pid"]), 120, f"orphan worker {slow['pid']} to exit")
    runs = runs_by_name(db)
    assert runs["slow"]["status"] == "running" and runs["slow"]["owner"] == slow["owner"]
    assert runs["quick"] == quick_before  # finished work is safe in the store

    doctor = ablate_call("doctor", "--db", db, cwd=tmp_path)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "integrity: ok" in doctor.stdout
    assert f"stale run {runs['slow']['id']} slow: owner {slow['owner']}" in doctor.stdout

    again = ablate_call("run", str(two_spec), "--db", db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 done, 1 to run" in again.stdout
    runs = runs_by_name(db)
    assert runs["slow"]["status"] == "done" and runs["slow"]["attempts"] == 2
    assert runs["quick"] == quick_before  # not run twice, not rewritten
    assert query(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("done", 2)]
    assert ablate_call("doctor", "--db", db, cwd=tmp_path).returncode == 0

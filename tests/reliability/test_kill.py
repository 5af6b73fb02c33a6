"""kill -9 of a worker, and of the coordinator, and Ctrl-C, in the middle of a real sweep."""

from __future__ import annotations

import os
import signal

from tests.reliability.reliability_helpers import (ablate_call, ablate_proc, pid_alive, query, runs_by_name, training, two_rows,
                                                   wait_for)


def test_worker_kill9_marks_interrupted_sweep_goes_on_next_run_retries(make_spec, db, tmp_path):
    # --jobs 1: the two runs must go one after the other (the CPU default is one run per core)
    spec = two_rows(make_spec, slow_first=True)  # the quick run then proves the sweep goes on
    proc = ablate_proc("run", str(spec), "--db", db, "--jobs", "1", cwd=tmp_path)
    slow = wait_for(lambda: training(db, "slow"), 180, "the slow run to train an epoch", proc)
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
    slow = wait_for(lambda: training(db, "slow"), 180, "the slow run to train an epoch", proc)
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


SLOW_EPOCHS = 40


def _ctrl_c_spec(make_spec):
    """Four runs: "quick" (1 epoch) for seeds 1 and 2, then "slow" (SLOW_EPOCHS epochs,
    validated once) for both seeds; with --jobs 2 the slow ones train side by side."""
    return make_spec("ctrlc", seeds=[1, 2], baselines={"quick": {"model": "BPR"}},
                     variants={"slow": {"model": "BPR", "params": {"epochs": SLOW_EPOCHS, "eval_step": SLOW_EPOCHS}}})


def _all_runs(db):
    cols = ["id", "name", "status", "pid", "attempts", "epoch", "error", "ended_at"]
    return {r[0]: dict(zip(cols, r)) for r in query(db, f"SELECT {', '.join(cols)} FROM runs ORDER BY id")}


def test_ctrl_c_marks_unfinished_runs_interrupted_keeps_the_rest_next_run_completes_them_once(make_spec, db, tmp_path):
    """SIGINT to the sweep's process group, as a terminal's Ctrl-C sends it (the coordinator
    and its workers): the coordinator stops the workers (which ignore SIGINT themselves),
    marks the two runs still training interrupted and exits 130; the two finished runs and
    their metrics are as they were, the store passes SQLite's integrity check, and the next
    `ablate run` trains each interrupted run once more and nothing else."""
    spec = _ctrl_c_spec(make_spec)
    proc = ablate_proc("run", str(spec), "--db", db, "--jobs", "2", cwd=tmp_path)

    def slow_ones_training():
        runs = [r for r in _all_runs(db).values()]
        quick = [r for r in runs if r["name"] == "quick"]
        slow = [r for r in runs if r["name"] == "slow"]
        if (len(runs) == 4 and all(r["status"] == "done" for r in quick)
                and all(r["status"] == "running" and r["pid"] and r["epoch"] is not None for r in slow)):
            return slow
        return None

    slow = wait_for(slow_ones_training, 240, "both slow runs to train an epoch", proc)
    # a worker ignores SIGINT itself: sent to it alone, its run trains on
    os.kill(slow[0]["pid"], signal.SIGINT)
    wait_for(lambda: (_all_runs(db)[slow[0]["id"]]["epoch"] or 0) > slow[0]["epoch"], 120,
             f"run {slow[0]['id']} to train on after its worker got SIGINT", proc)
    assert {k: _all_runs(db)[slow[0]["id"]][k] for k in ("status", "pid")} == {"status": "running", "pid": slow[0]["pid"]}
    metrics_before = query(db, "SELECT run_id, split, name, value FROM metrics ORDER BY run_id, split, name")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "interrupted: unfinished runs are marked interrupted and run again next time" in out, out
    assert "Traceback" not in out + err, (out, err)
    for r in slow:  # no worker is left training; the coordinator stopped it, not the terminal's SIGINT
        wait_for(lambda: not pid_alive(r["pid"]), 120, f"worker {r['pid']} to exit")
        log = (tmp_path / ".ablate" / "runs" / str(r["id"]) / "run.log").read_text()
        assert "KeyboardInterrupt" not in log, log[-2000:]

    runs = _all_runs(db)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    for r in runs.values():
        if r["name"] == "quick":
            assert (r["status"], r["attempts"], r["epoch"]) == ("done", 1, 0), r
        else:
            assert (r["status"], r["attempts"]) == ("interrupted", 1), r
            assert r["error"] == "interrupted: the sweep was stopped (Ctrl-C/SIGTERM)" and r["ended_at"], r
            assert r["epoch"] < SLOW_EPOCHS - 1, r  # stopped mid-way
    assert query(db, "SELECT run_id, split, name, value FROM metrics ORDER BY run_id, split, name") == metrics_before
    assert {rid for rid, *_ in metrics_before} == {r["id"] for r in runs.values() if r["name"] == "quick"}

    again = ablate_call("run", str(spec), "--db", db, "--jobs", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 done, 2 to run" in again.stdout and "finished: 2 done" in again.stdout, again.stdout
    runs = _all_runs(db)
    assert {(r["name"], r["status"], r["attempts"]) for r in runs.values()} == {("quick", "done", 1), ("slow", "done", 2)}
    for r in runs.values():  # each epoch stored once, by the one attempt that finished
        epochs = [e for (e,) in query(db, "SELECT epoch FROM epochs WHERE run_id = ? ORDER BY epoch", r["id"])]
        assert epochs == list(range(1 if r["name"] == "quick" else SLOW_EPOCHS)), (r, epochs)
    assert query(db, "SELECT run_id, split, name, value FROM metrics WHERE run_id IN (?, ?) ORDER BY run_id, split, name",
                 *[r["id"] for r in runs.values() if r["name"] == "quick"]) == metrics_before
    assert query(db, "PRAGMA integrity_check") == [("ok",)]

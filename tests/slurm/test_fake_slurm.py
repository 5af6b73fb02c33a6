"""The Slurm branch itself (sbatch script, array ids, sacct states, scancel), driven by
stand-in ``sbatch``/``sacct``/``scancel`` scripts on PATH: there is no Slurm here. The
stand-ins only record what they were asked and answer what a test wrote, so every
decision under test (job arrays, per-run job ids, state -> run status, idempotent
collect) is ablate's and submitit's real code. No model trains in this file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ablate.store import Store

from tests.slurm.slurm_helpers import cli

SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/next" 2>/dev/null || echo 4242)
cp "$1" "$FAKE_SLURM/sbatch.$n.sh"
echo $((n + 1)) > "$FAKE_SLURM/next"
echo "Submitted batch job $n"
"""
SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null
"""
SRUN = """#!/bin/sh
exec "$@"
"""
SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/scancel.log"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "slurmstate"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", SBATCH), ("sacct", SACCT), ("scancel", SCANCEL), ("srun", SRUN)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.delenv("ABLATE_SUBMITIT_CLUSTER", raising=False)
    return state


def sacct(state: Path, **jobs: str) -> None:
    (state / "sacct.txt").write_text("".join(f"{j.replace('j', '')}|{s}|node1\n" for j, s in jobs.items()))


def write_events(path: Path, events: list[dict], torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + torn)


def test_slurm_array_states_collect_cancel(spec, tmp_path, fake_slurm):
    slurm_flow(spec, tmp_path / "s.db", tmp_path / "shared", fake_slurm)


def slurm_flow(spec: Path, db, folder: Path, fake_slurm: Path) -> None:
    """Submit, watch, collect (twice), resubmit, cancel: the Slurm life of a two-run spec."""
    res = cli("run", spec, "--db", db, "--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1",
              "--time", "1:30:00", "--array-parallelism", "3", "--slurm-folder", folder, "--no-wait")
    assert "submitted 2 run(s) as 2 job(s) [4242_0, 4242_1]" in res.output, res.output
    script = (fake_slurm / "sbatch.4242.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --array=0-1%2", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1"):
        assert line in script, script
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert (runs[1].status, runs[1].job_id, runs[2].job_id) == ("running", "4242_0", "4242_1")
    assert runs[1].executor == "slurm" and runs[1].owner.startswith("slurm:")

    # A run on Slurm outlives its coordinator: another `ablate run` neither requeues nor resubmits it.
    sacct(fake_slurm, j4242_0="RUNNING", j4242_1="PENDING")
    res = cli("run", spec, "--db", db, "--executor", "slurm", "--slurm-folder", folder, "--no-wait")
    assert "0 to run, 2 running elsewhere" in res.output and not (fake_slurm / "sbatch.4243.sh").exists()
    out = cli("status", spec, "--db", db).output
    assert "4242_0" in out and "RUNNING" in out and "4242_1" in out and "PENDING" in out, out

    metrics = {"valid": {"recall@10": 0.25, "ndcg@10": 0.5}, "test": {"recall@10": 0.125, "ndcg@10": 0.0625}}
    write_events(folder / "1" / "events.4242_0.jsonl", [
        {"type": "job", "run_id": 1, "job_id": "4242_0", "time": "2026-01-02T03:04:05"},
        {"type": "started", "run_id": 1, "device": "cuda:0", "host": "node1", "pid": 7, "log_path": "/x/run.log"},
        {"type": "epoch", "run_id": 1, "epoch": 0, "losses": {"loss": 0.7}, "train_seconds": 1.5},
        {"type": "valid", "run_id": 1, "epoch": 0, "valid_score": 0.5, "valid": metrics["valid"]},
        {"type": "finished", "run_id": 1, "status": "done", "metrics": metrics, "epoch": 0, "best_epoch": 0,
         "wall_seconds": 12.5},
    ])
    write_events(folder / "2" / "events.4242_1.jsonl", [
        {"type": "started", "run_id": 2, "device": "cuda:0", "host": "node2", "pid": 8},
        {"type": "epoch", "run_id": 2, "epoch": 0, "losses": {"loss": 0.9}, "train_seconds": 2.0},
    ], torn='{"type": "valid", "run_id": 2, "ep')  # the job was preempted mid-write
    sacct(fake_slurm, j4242_0="COMPLETED", j4242_1="PREEMPTED")
    res = cli("collect", spec, "--db", db)
    assert "1 done" in res.output and "1 interrupted" in res.output, res.output
    runs = {r.id: r for r in Store(str(db)).runs()}
    assert runs[1].status == "done" and runs[1].wall_seconds == 12.5 and runs[1].host == "node1"
    assert str(runs[1].started_at) == "2026-01-02 03:04:05"
    assert {(m.split, m.name): m.value for m in runs[1].metrics} == {
        (s, k): v for s, vals in metrics.items() for k, v in vals.items()}
    assert [(e.epoch, e.losses, e.valid_score) for e in runs[1].epochs] == [(0, {"loss": 0.7}, 0.5)]
    assert runs[2].status == "interrupted" and "4242_1 ended (PREEMPTED)" in runs[2].error
    assert [(e.epoch, e.losses, e.valid_score) for e in runs[2].epochs] == [(0, {"loss": 0.9}, None)]
    assert "nothing to collect" in cli("collect", spec, "--db", db).output
    # The table reads the same store (PostgreSQL through SQLAlchemy, a SQLite file with sqlite3).
    out = cli("table", spec, "--db", db, "--md", "-m", "recall@10,ndcg@10").output
    assert "| LightGCN | **0.1250** | **0.0625** |" in out and "| deeper | interrupted | interrupted |" in out, out

    # The next run resubmits only the interrupted run; cancel stops its job.
    res = cli("run", spec, "--db", db, "--executor", "slurm", "--slurm-folder", folder, "--no-wait")
    assert "submitted 1 run(s) as 1 job(s) [4243]" in res.output, res.output
    assert "--gpus-per-node=1" in (fake_slurm / "sbatch.4243.sh").read_text()  # the default: one GPU per job
    sacct(fake_slurm, j4243="RUNNING")  # submitit sends a one-job array as a plain job
    res = cli("cancel", spec, "--db", db)
    assert "cancelled 1 job(s), 1 run(s) marked interrupted" in res.output, res.output
    assert (fake_slurm / "scancel.log").read_text().split() == ["4243"]
    run2 = Store(str(db)).get_run(2)
    assert run2.status == "interrupted" and run2.attempts == 2 and "cancelled" in run2.error
    assert Store(str(db)).get_run(1).status == "done"


def test_timeout_state_and_bad_options(spec, tmp_path, fake_slurm):
    db = tmp_path / "s.db"
    cli("run", spec, "--db", db, "--executor", "slurm", "--gpus-per-job", "0", "--per-gpu", "2", "--no-wait")
    assert "--array" not in (fake_slurm / "sbatch.4242.sh").read_text()  # two runs packed in one plain job
    assert {r.job_id for r in Store(str(db)).runs()} == {"4242"}
    sacct(fake_slurm, j4242="TIMEOUT")
    cli("collect", spec, "--db", db)
    assert {r.status for r in Store(str(db)).runs()} == {"timeout"}

    for args, message in (
        (["--executor", "pbs"], "--executor expects local or slurm"),
        (["--executor", "slurm", "--time", "soon"], "--time expects"),
    ):
        res = cli("run", spec, "--db", db, *args, code=2)
        assert res.output.startswith("ablate: error: ") and message in res.output and res.output.count("\n") == 1, res.output


def test_no_sbatch_is_one_line_error(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    monkeypatch.delenv("ABLATE_SUBMITIT_CLUSTER", raising=False)
    res = cli("run", spec, "--db", tmp_path / "s.db", "--executor", "slurm", code=2)
    assert "sbatch is not on PATH" in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "s.db").exists()  # refused before anything was stored


def test_time_limit_signal_is_left_to_slurm():
    """submitit's SIGUSR2 handler raises inside a timed-out job that is not checkpointable
    (the run would end failed, or the job FAILED before it started); the job's handler
    lets a timed-out job run on to Slurm's TIMEOUT and passes a preemption to submitit."""
    import os
    import signal
    import time

    from submitit.core.job_environment import SignalHandler

    from ablate.executors import slurm

    seen = []

    class Handler(SignalHandler):
        def __init__(self, timed_out: bool):  # noqa: D107 - no job environment here
            self.timed_out = timed_out

        def has_timed_out(self) -> bool:
            return self.timed_out

        def checkpoint_and_try_requeue(self, signum, frame=None):
            seen.append(self.timed_out)

    before = signal.getsignal(signal.SIGUSR2)
    try:
        for timed_out in (True, False):
            signal.signal(signal.SIGUSR2, Handler(timed_out).checkpoint_and_try_requeue)
            slurm.jobs._leave_time_limit_to_slurm()
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert seen == [False]

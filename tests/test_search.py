"""``ablate search``: real BPR trials on ml-100k through the real CLI and a real store.

A 6-trial search with median pruning (trials end ``pruned`` after an epoch, their epochs
kept), a search rebuilt from the store that trains nothing, a resume after ``kill -9`` of
the coordinator, a trial answered from runs ``ablate run`` stored, the best trial rerun
with another seed, the top-k table and the plot, and bad search blocks (one line, exit 2).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app

from tests.specs import line_of, write_tiny

SEARCH = {
    "space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-1]}},
    "objective": "ndcg@10",
    "trials": 6,
    "sampler": {"kind": "tpe", "seed": 1, "startup_trials": 3},
    "pruner": {"kind": "median", "startup_trials": 2},
}


def _spec(tmp_path: Path, batch: int = 4096, grid: dict | None = None, **search) -> Path:
    """``quick.yaml``: BPR, 2 epochs validated after each, searched as :data:`SEARCH`
    (its settings replaced by ``search``; ``variant`` goes first)."""
    first = {"variant": search.pop("variant")} if "variant" in search else {}
    return write_tiny(tmp_path, "quick", epochs=2, eval_step=1, train_batch_size=batch, baselines=None,
                      variants={"bpr": {"model": "BPR"}}, grid=grid, search={**first, **SEARCH, **search})


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _rows(db: str, sql: str) -> list[tuple]:
    con = sqlite3.connect(db, timeout=60)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


TRIALS = ('SELECT r.id, r.status, r.attempts, r.epoch, r.ended_at, m."position" FROM experiment_runs m '
          "JOIN experiments e ON e.id = m.experiment_id JOIN runs r ON r.id = m.run_id "
          "WHERE e.name = 'quick.search' ORDER BY m.\"position\"")


def test_six_trials_pruned_rebuilt_top_plot_and_best_rerun(tmp_path, db):
    spec = _spec(tmp_path)
    res = _invoke("search", str(spec), "--db", db, "--jobs", "1")
    assert res.exit_code == 0, res.output
    trials = _rows(db, TRIALS)
    assert [t[5] for t in trials] == list(range(6))
    statuses = [t[1] for t in trials]
    assert set(statuses) <= {"done", "pruned"} and "pruned" in statuses and "done" in statuses
    for rid, status, attempts, epoch, _, _ in trials:
        epochs = _rows(db, f"SELECT epoch, valid_score FROM epochs WHERE run_id = {rid} ORDER BY epoch")
        assert attempts == 1
        if status == "pruned":  # stopped after its first epoch; that epoch and its score are kept
            assert epoch == 0 and len(epochs) == 1 and epochs[0][1] is not None
            assert _rows(db, f"SELECT error FROM runs WHERE id = {rid}")[0][0] == "pruned after epoch 1"
        else:
            assert epoch == 1 and [e[0] for e in epochs] == [0, 1]
    pruned = [t[0] for t in trials if t[1] == "pruned"]
    # the median pruner stopped only trials whose first valid score was below the median
    # of the finished trials' first scores
    first = {rid: v for rid, v in _rows(db, "SELECT run_id, valid_score FROM epochs WHERE epoch = 0")}
    done_first = sorted(first[t[0]] for t in trials if t[1] == "done")
    assert all(first[p] < done_first[len(done_first) // 2] for p in pruned)

    from ablate.store import Store

    assert Store(db).requeue(pruned, retry=True) == {"stale": 0, "retry": 0, "forced": 0}  # pruned is final

    # the same command again: the study is rebuilt from the store; nothing trains
    again = _invoke("search", str(spec), "--db", db, "--jobs", "1")
    assert again.exit_code == 0, again.output
    assert "6 stored, 0 to finish" in again.output
    assert _rows(db, TRIALS) == trials

    valid = dict(_rows(db, "SELECT run_id, value FROM metrics WHERE split = 'valid' AND name = 'ndcg@10'"))
    best_id = max((t[0] for t in trials if t[1] == "done"), key=valid.get)
    top = _invoke("table", str(spec), "--db", db, "--top", "2", "--csv")
    assert top.exit_code == 0, top.output
    lines = top.output.splitlines()
    assert lines[0] == "rank,trial,run,valid ndcg@10,test ndcg@10,learning_rate,epochs"
    assert len(lines) == 3 and lines[1].split(",")[2] == str(best_id)
    assert float(lines[1].split(",")[3]) == valid[best_id]

    png = tmp_path / "search.png"
    out = _invoke("plot", "quick.search", "--db", db, "--search", "-o", str(png))
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    best = _invoke("search", str(spec), "--db", db, "--jobs", "1", "--rerun-best", "--seeds", "2021")
    assert best.exit_code == 0, best.output
    group = _rows(db, "SELECT r.id, r.seed, r.status, r.config FROM experiment_runs m JOIN experiments e ON e.id = m.experiment_id "
                      "JOIN runs r ON r.id = m.run_id WHERE e.name = 'quick.search.best' ORDER BY r.seed")
    assert [(g[1], g[2]) for g in group] == [(2020, "done"), (2021, "done")]
    assert group[0][0] == best_id and group[1][0] not in {t[0] for t in trials}
    import json

    assert json.loads(group[0][3])["learning_rate"] == json.loads(group[1][3])["learning_rate"]


def test_resume_after_kill_9_of_the_coordinator(tmp_path, db):
    spec = _spec(tmp_path, batch=1024)  # ~1 s a trial: the kill lands mid-search
    cmd = [sys.executable, "-m", "ablate", "search", str(spec), "--db", db, "--jobs", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if Path(db).exists():
                try:
                    ended = [t for t in _rows(db, TRIALS) if t[1] in ("done", "pruned")]
                except sqlite3.OperationalError:
                    ended = []
                if ended:
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = _rows(db, TRIALS)
    finished = {t[0]: t for t in before if t[1] in ("done", "pruned")}
    assert 1 <= len(finished) < 6, before

    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    after = _rows(db, TRIALS)
    assert len(after) == 6 and len({t[0] for t in after}) == 6
    assert {t[1] for t in after} <= {"done", "pruned"}
    for rid, row in finished.items():  # finished before the kill: never trained again
        assert next(t for t in after if t[0] == rid) == row
    assert all(t[2] <= 2 for t in after)  # a trial cut by the kill trained once more, no more
    assert _rows(db, "SELECT count(*) FROM runs")[0][0] == 6


def test_trial_answered_from_the_store(tmp_path, db):
    spec = _spec(tmp_path, grid={"learning_rate": [0.01, 0.05]}, space={"learning_rate": {"choice": [0.01, 0.05]}},
                 trials=2)
    res = _invoke("run", str(spec), "--db", db, "--jobs", "1")
    assert res.exit_code == 0, res.output
    grid = {rid: (attempts, ended) for rid, attempts, ended in _rows(db, "SELECT id, attempts, ended_at FROM runs")}
    assert len(grid) == 2
    res = _invoke("search", str(spec), "--db", db, "--jobs", "1")
    assert res.exit_code == 0, res.output
    assert "2 answered from the store" in res.output
    trials = _rows(db, TRIALS)
    assert {t[0] for t in trials} == set(grid)
    assert {rid: (a, e) for rid, a, e in _rows(db, "SELECT id, attempts, ended_at FROM runs")} == grid


BAD = [
    ({"learning_rate": {"logunif": [1.0e-4, 1.0e-1]}},
     "search.space.learning_rate.logunif: unknown key 'logunif' (allowed: choice, int, loguniform, step, uniform)"),
    ({"learning_rate": {"uniform": [0.1, 0.01]}},
     "search.space.learning_rate: uniform expects finite low < high, got [0.1, 0.01]"),
    ({"learning_rate": {"loguniform": [0, 0.1]}}, "search.space.learning_rate: loguniform expects low > 0, got 0"),
    ({"learnin_rate": {"loguniform": [1.0e-4, 1.0e-1]}},
     "search.space.learnin_rate: unknown parameter 'learnin_rate' for model BPR (did you mean 'learning_rate'?)"),
    ({"epochs": {"int": [0, 3]}}, "search.space.epochs: must be >= 1, got 0"),
    ({"learning_rate": {"choice": []}}, "search.space.learning_rate: choice must list at least one value"),
    ({"seed": {"int": [1, 9]}}, "search.space.seed: seed is set by the spec's seeds: list"),
]


@pytest.mark.parametrize("space, message", BAD, ids=[m.split(": ")[-1][:30] for _, m in BAD])
def test_bad_search_space_is_one_line_exit_2(tmp_path, db, space, message):
    """Each error names the file and the line of the dimension it is about."""
    spec = _spec(tmp_path, space=space)
    line = line_of(spec.read_text(), f"    {next(iter(space))}: ")
    res = _invoke("search", str(spec), "--db", db)
    assert res.exit_code == 2
    assert res.output.splitlines() == [f"ablate: error: {spec}:{line}: {message}"]
    assert not Path(db).exists()


BAD_SETTINGS = [
    ({"objective": "hit@10"}, "  objective: ",
     "search.objective.metric: hit@10 is not among what the runs compute (recall@10, ndcg@10)"),
    ({"trials": 0}, "  trials: ", "search.trials: Input should be greater than or equal to 1"),
    ({"pruner": "hyperband"}, "  pruner: ", "search.pruner.kind: must be median, halving or none, got 'hyperband'"),
    ({"variant": "lightgcn"}, "  variant: ", "search.variant: no row named 'lightgcn' (rows: bpr)"),
    ({"objective": {"metric": "ndcg@10", "direction": "up"}}, "  objective: ",
     "search.objective.direction: must be maximize or minimize, got 'up'"),
]


@pytest.mark.parametrize("setting, line, message", BAD_SETTINGS, ids=[m.split(": ")[0] for *_, m in BAD_SETTINGS])
def test_bad_search_settings_are_one_line_exit_2(tmp_path, db, setting, line, message):
    """Each error names the file and the line of the setting it is about."""
    spec = _spec(tmp_path, **setting)
    res = _invoke("search", str(spec), "--db", db)
    assert res.exit_code == 2
    assert res.output.splitlines() == [f"ablate: error: {spec}:{line_of(spec.read_text(), line)}: {message}"]


def test_the_shipped_search_spec_prepares_on_ml100k():
    from ablate import search
    from ablate.spec import load_spec

    found = search.prepare(load_spec(Path(__file__).resolve().parent.parent / "experiments" / "search.yaml"),
                           {"dataset": "ml-100k"})
    assert (found.row, found.model, found.metric, found.direction) == ("proto", "LightGCNOT", "ndcg@10", "maximize")
    run = found.run_for({"ot_weight": 3.0e-7, "proto_weight": 2.0e-8})
    assert (run.config["ot_weight"], run.config["proto_weight"], run.config["ot_mix"]) == (3.0e-7, 2.0e-8, 0.5)
    assert run.name == "proto_3e-7ot_weight_2e-8proto_weight"

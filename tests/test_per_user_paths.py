"""Every way a run is trained stores its per-user values and unrounded means with its
result: fused group members, Slurm jobs (submitit's local cluster: real job processes
writing events files that the coordinator collects), search trials and reruns. Each
member's values equal its solo run's, value for value."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from typer.testing import CliRunner

from ablate.cli import app
from ablate.peruser import decode

from tests.stored import full_metrics


def _run(*args, env=None):
    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert res.exit_code == 0, res.output
    return res.output


def _kept(db) -> dict[tuple[str, str], bytes]:
    with closing(sqlite3.connect(db)) as c:
        per_user = {(n, s): bytes(d) for n, s, d in c.execute(
            "SELECT r.name, p.split, p.data FROM per_user p JOIN runs r ON r.id = p.run_id")}
        missing = c.execute("SELECT count(*) FROM metrics WHERE exact IS NULL").fetchone()[0]
    assert missing == 0  # every metric with its unrounded mean
    return per_user


def test_fused_members_keep_what_their_solo_runs_keep(tmp_path, make_spec):
    spec = make_spec("fz", baselines=None,
                     variants={"a": {"model": "LightGCN"}, "b": {"model": "LightGCN", "params": {"n_layers": 1}}})
    _run("run", spec, "--db", tmp_path / "solo.db", "--jobs", "1", "--cpu")
    _run("run", spec, "--db", tmp_path / "fused.db", "--jobs", "1", "--cpu", "--fuse", "2")
    solo, fused = _kept(tmp_path / "solo.db"), _kept(tmp_path / "fused.db")
    assert set(fused) == {(r, s) for r in ("a", "b") for s in ("valid", "test")}
    for key in solo:
        assert decode(fused[key]).equals(decode(solo[key])), key
    assert full_metrics(tmp_path / "fused.db") == full_metrics(tmp_path / "solo.db")  # the unrounded means too
    with closing(sqlite3.connect(tmp_path / "fused.db")) as c:
        assert {d for (d,) in c.execute("SELECT device FROM runs")} == {"cpu+fused2"}


def test_slurm_jobs_send_them_through_their_events_files(tmp_path, make_spec):
    spec = make_spec("sl")
    env = {"ABLATE_SUBMITIT_CLUSTER": "local"}
    _run("run", spec, "--db", tmp_path / "s.db", "--executor", "slurm", "--gpus-per-job", "0", env=env)
    _run("run", spec, "--db", tmp_path / "l.db", "--jobs", "1")
    slurm, local = _kept(tmp_path / "s.db"), _kept(tmp_path / "l.db")
    assert set(slurm) == {("BPR", "valid"), ("BPR", "test")}
    assert all(decode(slurm[k]).equals(decode(local[k])) for k in slurm)
    assert full_metrics(tmp_path / "s.db") == full_metrics(tmp_path / "l.db")  # the unrounded means too


def test_search_trials_and_reruns_keep_them(tmp_path, make_spec):
    spec = make_spec("se", baselines=None, variants={"bpr": {"model": "BPR"}}, search={
        "space": {"learning_rate": {"choice": [0.001, 0.01]}}, "objective": "ndcg@10", "trials": 2,
        "pruner": {"kind": "none"}})
    db = tmp_path / "se.db"
    _run("search", spec, "--db", db, "--jobs", "1")
    with closing(sqlite3.connect(db)) as c:
        trials = [rid for (rid,) in c.execute("SELECT id FROM runs WHERE status = 'done'")]
        kept = c.execute("SELECT count(*) FROM per_user WHERE split = 'test'").fetchone()[0]
    assert len(trials) == 2 and kept == 2
    out = _run("rerun", trials[0], "--db", db, "--jobs", "1")
    assert "reproduced: all 4 metrics (valid and test) equal" in out
    with closing(sqlite3.connect(db)) as c:
        new = c.execute("SELECT max(id) FROM runs").fetchone()[0]
        a, b = (bytes(d) for (d,) in c.execute(
            "SELECT data FROM per_user WHERE split = 'test' AND run_id IN (?, ?) ORDER BY run_id", (trials[0], new)))
    assert decode(a).equals(decode(b))

"""The store survives a writer killed mid-transaction, upgrades old files, refuses newer
ones, and never lets a presumed-dead coordinator overwrite a requeued run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import SCHEMA_VERSION, Status, Store, health, integrity, make_owner

from tests.reliability.reliability_helpers import query


def _add_runs(store: Store, n: int, status: str = "done", prefix: str = "k") -> list[int]:
    """Runs inserted directly (no spec needed): what a finished sweep leaves behind."""
    from ablate.store import Metric, Run

    with store.session() as s:
        rows = [Run(key=f"{prefix}{i:04d}", name=f"r{i}", model="BPR", dataset="ml-100k", seed=2020, config={"i": i},
                    status=status) for i in range(n)]
        s.add_all(rows)
        s.flush()
        for r in rows:
            s.add(Metric(run_id=r.id, split="test", name="recall@10", value=0.125))
        return [r.id for r in rows]


WRITER = textwrap.dedent("""
    import sys
    from ablate.store import Metric, Run, Store
    store = Store(sys.argv[1])
    with store.session() as s:
        for i in range(100000):
            r = Run(key=f"big{i}", name="big", model="BPR", dataset="ml-100k", seed=i, config={"pad": "x" * 200})
            s.add(r)
            if i % 500 == 0:
                s.flush()
                if i == 5000:
                    print("WRITING", flush=True)
""")


def test_writer_killed_mid_transaction_leaves_a_sound_store(db):
    store = Store(db)
    ids = _add_runs(store, 50)
    store.engine.dispose()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, db], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"  # 5000 uncommitted rows flushed into the WAL
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert integrity(Store(db).path) == []
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT count(*) FROM runs") == [(50,)]  # the committed rows, and only them
    assert query(db, "SELECT count(*) FROM metrics WHERE value = 0.125") == [(50,)]
    store = Store(db)
    assert [r.id for r in store.runs()] == ids
    _add_runs(store, 1, prefix="after")  # and it still takes writes (no lock left behind)
    assert store.counts() == {"done": 51}


V1_SCHEMA = """
CREATE TABLE experiments (id INTEGER PRIMARY KEY, name VARCHAR(200) UNIQUE, spec_path TEXT, spec_text TEXT,
    created_at DATETIME, updated_at DATETIME);
CREATE TABLE runs (id INTEGER PRIMARY KEY, key VARCHAR(32), name VARCHAR(300), model VARCHAR(100),
    dataset VARCHAR(200), seed INTEGER, config JSON, status VARCHAR(16), error TEXT, epoch INTEGER,
    attempts INTEGER, created_at DATETIME, started_at DATETIME, ended_at DATETIME, wall_seconds FLOAT,
    device VARCHAR(64), host VARCHAR(200), pid INTEGER, owner VARCHAR(300), heartbeat_at DATETIME,
    executor VARCHAR(32), git_commit VARCHAR(64), versions JSON, log_path TEXT,
    rerun_of INTEGER REFERENCES runs(id));
CREATE TABLE experiment_runs (id INTEGER PRIMARY KEY, experiment_id INTEGER REFERENCES experiments(id),
    run_id INTEGER REFERENCES runs(id), row VARCHAR(300), variant VARCHAR(300), role VARCHAR(16),
    position INTEGER, point JSON);
CREATE TABLE metrics (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), split VARCHAR(16),
    name VARCHAR(64), value FLOAT);
CREATE TABLE epochs (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id), epoch INTEGER, losses JSON,
    train_seconds FLOAT, valid_score FLOAT, valid JSON);
INSERT INTO experiments VALUES (1, 'old', NULL, 'name: old', '2025-01-01 00:00:00', '2025-01-01 00:00:00');
INSERT INTO runs (id, key, name, model, dataset, seed, config, status, epoch, attempts)
    VALUES (1, 'abc', 'LightGCN', 'LightGCN', 'ml-1m', 2020, '{"epochs": 300}', 'done', 299, 1);
INSERT INTO experiment_runs VALUES (1, 1, 1, 'LightGCN', 'LightGCN', 'baseline', 0, '{}');
INSERT INTO metrics VALUES (1, 1, 'test', 'recall@20', 0.2751);
INSERT INTO epochs VALUES (1, 1, 299, '{"loss": 0.01}', 3.5, 0.1, '{}');
"""


def test_v1_database_is_upgraded_in_place_without_losing_rows(db):
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    con.close()
    store = Store(db, create=False)
    assert health(store).schema_version == SCHEMA_VERSION == 3
    run = store.get_run(1)
    assert (run.key, run.status, run.metric("test", "recall@20"), run.epochs[0].losses) == ("abc", "done", 0.2751, {"loss": 0.01})
    assert run.best_epoch is None and run.peak_mem_mb is None and run.job_id is None  # the new columns
    cols = {r[1] for r in query(db, "PRAGMA table_info(runs)")}
    assert {"best_epoch", "job_id", "peak_mem_mb"} <= cols
    store.finish(1, Status.DONE, best_epoch=12, peak_mem_mb=1.5)
    assert Store(db).get_run(1).best_epoch == 12  # a second open is a no-op


def test_newer_schema_is_refused_with_one_line(db):
    Store(db).engine.dispose()  # last connection closed: the WAL is folded into the file
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    before = open(db, "rb").read()
    res = CliRunner().invoke(app, ["doctor", "--db", db])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [f"ablate: error: {db} was written by a newer ablate (schema 99 > {SCHEMA_VERSION}); upgrade ablate"]
    assert open(db, "rb").read() == before


def _dead_owner() -> str:
    """An owner string for a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = make_owner().rsplit(":", 2)[0]
    return f"{host}:{proc.pid}:1"


def test_late_result_of_a_presumed_dead_coordinator_is_dropped(db):
    store = Store(db)
    [rid] = _add_runs(store, 1, status="pending")
    from ablate.store import Experiment, Member

    with store.session() as s:
        exp = Experiment(name="e")
        s.add(exp)
        s.flush()
        s.add(Member(experiment_id=exp.id, run_id=rid, row="r0", variant="r0", role="baseline", position=0))
    old = _dead_owner()  # the coordinator that claimed it is taken for dead...
    assert store.claim([rid], old).id == rid
    assert store.requeue([rid], retry=False)["stale"] == 1
    new = make_owner()
    assert store.claim([rid], new).attempts == 2
    assert store.add_epoch(rid, 0, losses={"loss": 1.0}, owner=new)
    # ... but it was only suspended; it wakes up and reports. Nothing of it is written.
    assert not store.mark_started(rid, owner=old, device="cuda:7")
    assert not store.add_epoch(rid, 0, losses={"loss": 99.0}, owner=old)
    assert not store.finish(rid, Status.DONE, metrics={"test": {"recall@10": 0.9}}, owner=old)
    run = store.get_run(rid)
    assert (run.status, run.owner, run.device, run.metrics, run.epochs[0].losses) == ("running", new, None, [], {"loss": 1.0})
    assert store.finish(rid, Status.DONE, metrics={"test": {"recall@10": 0.5}}, owner=new)
    assert not store.finish(rid, Status.FAILED, owner=new)  # a run ends once
    assert store.get_run(rid).metric("test", "recall@10") == 0.5


def test_doctor_lists_stale_rows_and_fix_requeues_them(db):
    store = Store(db)
    ids = _add_runs(store, 3)
    owner = _dead_owner()
    with store.session() as s:
        from sqlalchemy import update

        from ablate.store import Metric, Run

        s.execute(update(Run).where(Run.id == ids[0]).values(status="running", owner=owner))
        s.query(Metric).filter(Metric.run_id == ids[1]).delete()
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", "--db", db])
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "integrity: ok"
    assert lines[1] == f"schema: version {SCHEMA_VERSION}, this ablate writes {SCHEMA_VERSION}"
    assert lines[2] == "running: 0 under a live coordinator, 1 stale"
    assert lines[3].startswith(f"  stale run {ids[0]} r0: owner {owner}, last heartbeat never")
    assert f"done without test metrics: 1 run(s): {ids[1]}" in lines
    assert "orphans: 3 runs in no experiment" in lines
    res = runner.invoke(app, ["doctor", "--db", db, "--fix"])
    assert "  fixed: 1 stale run(s) requeued (pending); `ablate run SPEC` runs them" in res.stdout
    assert store.get_run(ids[0]).status == "pending"
    assert health(store).stale == []

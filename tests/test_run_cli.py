"""`ablate run` end to end: real CLI, real RecBole training on ml-100k, real SQLite file."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.devices import make_slots
from ablate.errors import UsageError

from tests.specs import line_of, tiny_yaml


def tiny(name: str = "tiny", **parts) -> str:
    """The tiny spec as these tests train it: 2 epochs, eval batches of 40960, no seeds
    list (the spec's default, 2020), and the rows each test names."""
    return tiny_yaml(name, **{"epochs": 2, "eval_batch_size": 40960, "seeds": None, "baselines": None, **parts})


V = {"v": {"model": "LightGCN"}}

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep: a good run, a diverging run (NaN), a crashing run, another good run."""
    d = tmp_path_factory.mktemp("sweep")
    spec = d / "tiny.yaml"
    spec.write_text(tiny(baselines={"LightGCN": {"model": "LightGCN"}}, variants={
        "diverge": {"model": "LightGCN", "params": {"learning_rate": 1.0e+30}},
        "broken": {"model": "LightGCN", "params": {"topk": [10, 5000]}},  # more than ml-100k's items: fails in evaluation
        "one_layer": {"model": "LightGCN", "params": {"n_layers": 1}},
    }))
    db = d / "results.db"
    first = invoke("run", spec, "--db", db)
    second = invoke("run", spec, "--db", db)
    return spec, db, first, second


def rows(db, sql):
    # closing(): a sqlite3 connection sits in a cycle with its statement cache, so one
    # that is merely dropped stays open until the garbage collector runs, and closing
    # then (the last connection) rewrites the database file from its write-ahead log
    with closing(sqlite3.connect(db)) as c:
        return c.execute(sql).fetchall()


def test_sweep_stores_done_runs_with_test_metrics(sweep):
    _, db, first, _ = sweep
    status = dict(rows(db, "select name, status from runs"))
    assert status == {"LightGCN": "done", "diverge": "nan", "broken": "failed", "one_layer": "done"}
    metrics = rows(db, "select r.name, m.name, m.value from metrics m join runs r on r.id = m.run_id "
                       "where m.split = 'test' and r.status = 'done'")
    got = {(n, m): v for n, m, v in metrics}
    for name in ("LightGCN", "one_layer"):
        assert 0 < got[(name, "recall@10")] < 1 and 0 < got[(name, "ndcg@10")] < 1
    # the sweep went on past the NaN and the crash, and said so with a non-zero exit
    assert first.exit_code == 1, first.output
    assert "nan" in first.output and "failed" in first.output


def test_nan_records_the_epoch_and_failure_the_message(sweep):
    _, db, _, _ = sweep
    (nan_epoch, nan_err), = rows(db, "select epoch, error from runs where name = 'diverge'")
    assert nan_epoch == 0 and "NaN" in nan_err
    (err,), = rows(db, "select error from runs where name = 'broken'")
    assert err.startswith("RuntimeError"), err


def test_per_epoch_losses_valid_scores_log_and_provenance_are_stored(sweep):
    _, db, _, _ = sweep
    epochs = rows(db, "select e.epoch, e.losses, e.valid_score from epochs e join runs r on r.id = e.run_id "
                      "where r.name = 'LightGCN' order by e.epoch")
    assert [e for e, _, _ in epochs] == [0, 1]
    assert all('"loss"' in losses and valid is not None for _, losses, valid in epochs)
    (log_path, versions, device, wall, attempts), = rows(
        db, "select log_path, versions, device, wall_seconds, attempts from runs where name = 'LightGCN'")
    assert os.path.isfile(log_path) and "ablate run" in open(log_path).read()
    assert '"recbole": "1.2.1"' in versions and device == "cpu" and wall > 0 and attempts == 1


def test_second_invocation_skips_done_runs_and_retries_failed_ones(sweep):
    _, db, _, second = sweep
    assert "2 done, 2 to run" in second.output
    attempts = dict(rows(db, "select name, attempts from runs"))
    assert attempts == {"LightGCN": 1, "one_layer": 1, "diverge": 2, "broken": 2}


def test_a_spec_that_shares_runs_reuses_their_results(sweep, tmp_path):
    spec, db, _, _ = sweep
    other = tmp_path / "other.yaml"
    other.write_text(tiny("other", baselines={"LightGCN": {"model": "LightGCN"}}))
    result = invoke("run", other, "--db", db)
    assert result.exit_code == 0, result.output
    assert "1 done, 0 to run" in result.output
    assert rows(db, "select count(*) from runs where name = 'LightGCN'") == [(1,)]


def test_the_database_file_is_whole_when_the_command_returns(sweep):
    """The command closes its store: SQLite folds the write-ahead log into the file then,
    not whenever the garbage collector frees the engine (copying results.db right after a
    sweep gets every result)."""
    _, db, _, _ = sweep
    assert not os.path.exists(f"{db}-wal")


def test_bad_spec_exits_2_with_one_line_and_leaves_the_store_untouched(sweep, tmp_path):
    _, db, _, _ = sweep
    before = open(db, "rb").read()
    bad = tmp_path / "bad.yaml"
    text = tiny(variants=V, grid={"n_layers": 3})
    bad.write_text(text)
    result = invoke("run", bad, "--db", db)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    line = line_of(text, "n_layers: 3")
    assert lines == [f"ablate: error: {bad}:{line}: grid.n_layers: must be a list of values, got int 3"]
    assert open(db, "rb").read() == before


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(tiny(variants=V, grid={"n_layers": [1, 2, 3]}))
    result = invoke("run", spec, "--db", tmp_path / "r.db", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.output and "v_2n_layers" in result.output
    assert not (tmp_path / "r.db").exists()


def test_gpu_slots_honour_visible_devices_and_per_gpu():
    slots = make_slots(["0", "1"], 3, None, available=["4", "6"], cores=12)
    assert [s.gpu for s in slots] == ["4", "4", "4", "6", "6", "6"]  # physical ids behind CUDA_VISIBLE_DEVICES=4,6
    assert {s.threads for s in slots} == {2}
    assert [s.gpu for s in make_slots(None, 1, None, available=["0", "1"])] == ["0", "1"]
    cpu = make_slots([], 1, 2, available=[], cores=2)
    assert [(s.gpu, s.threads) for s in cpu] == [(None, 1), (None, 1)]
    with pytest.raises(UsageError, match="no such GPU"):
        make_slots(["2"], 1, None, available=["0", "1"])


def test_runs_spread_over_the_gpus_nvidia_smi_lists(tmp_path, fake_gpus):
    """Two GPUs listed (a stand-in nvidia-smi): one slot each, each run handed its own GPU
    id by the real executor and worker; this CPU build of torch cannot use them, so each
    run ends ``failed`` saying so, under the device it was given."""
    spec = tmp_path / "g.yaml"
    spec.write_text(tiny(epochs=1, variants=V, grid={"n_layers": [1, 2]}))
    db = tmp_path / "g.db"
    result = invoke("run", spec, "--db", db, "--gpus", "0,1", "--per-gpu", "1")
    assert result.exit_code == 1, result.output
    assert "on 2 slot(s) [cuda:0, cuda:1]" in result.output
    got = sorted(rows(db, "select device, status, error from runs"))
    assert [(d, s) for d, s, _ in got] == [("cuda:0", "failed"), ("cuda:1", "failed")]
    assert all(e.startswith("given GPU ") and "cannot use CUDA here" in e for _, _, e in got)


def test_gpus_requested_on_a_machine_without_one_is_a_clear_error(tmp_path, monkeypatch):
    spec = tmp_path / "g.yaml"
    spec.write_text(tiny(variants=V))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    result = invoke("run", spec, "--db", tmp_path / "g.db", "--gpus", "0", env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.exit_code == 2
    assert result.output.strip().startswith("ablate: error: --gpus 0: no GPU is visible here")


def test_no_warm_gives_every_run_its_own_process(tmp_path):
    spec = tmp_path / "w.yaml"
    spec.write_text(tiny(epochs=1, variants=V, grid={"n_layers": [1, 2]}))
    db = tmp_path / "w.db"
    result = invoke("run", spec, "--db", db, "--jobs", "1", "--no-warm")
    assert result.exit_code == 0, result.output
    pids = [p for (p,) in rows(db, "select pid from runs")]
    assert len(pids) == 2 and len(set(pids)) == 2
    assert dict(rows(db, "select name, status from runs")) == {"v_1n_layers": "done", "v_2n_layers": "done"}

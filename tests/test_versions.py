"""Implementation versions: a fix never hides behind a stored result.

A run stored by older code is rebuilt here exactly as that code left it (its key hashed
without the implementation, its versions without a label), then the current CLI must
flag it in ``table`` and ``status``, and ``run`` must train the config again instead of
taking the stored numbers."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest
from typer.testing import CliRunner

import models
from ablate import plan, versions
from ablate.cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_initial_versions_leave_keys_as_they_were():
    """LightGCN (RecBole's, version 1): the key is the plain config hash of before."""
    import hashlib

    config = {"model": "LightGCN", "dataset": "ml-100k", "seed": 1, "n_layers": 2, "data_path": "/x"}
    blob = json.dumps({k: v for k, v in config.items() if k != "data_path"}, sort_keys=True, separators=(",", ":"))
    assert plan.run_key(config) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert versions.key_part("LightGCN") == {}


def test_a_model_version_enters_the_key(monkeypatch):
    config = {"model": "XSimGCL", "dataset": "ml-100k", "seed": 1}
    now = plan.run_key(config)
    assert versions.label("XSimGCL") == f"XSimGCL@{models.VERSIONS['XSimGCL']}+ablate@{versions.NUMBERS}"
    monkeypatch.setitem(models.VERSIONS, "XSimGCL", models.VERSIONS["XSimGCL"] + 1)
    assert plan.run_key(config) != now
    monkeypatch.setattr(versions, "NUMBERS", versions.NUMBERS + 1)
    monkeypatch.setitem(models.VERSIONS, "XSimGCL", 1)
    assert plan.run_key(config) != now  # ablate's own numbers count too


# Keys of runs as the code before LightGCNOT's switches for the notebook's last rows
# (param_init, bpr_weight, ot_normalize, ...) computed them, ml-100k overriding the dataset.
STORED_KEYS = {
    ("notebook.yaml", "default(wg32a)[dontchange]"): "c0d493107292956f",
    ("notebook.yaml", "wg32x"): "cd4c3411855a522c",
    ("notebook.yaml", "NCL"): "94171e380886ffb1",
    ("quickstart.yaml", "1e-7ot"): "df4f700a9129d751",
    ("quickstart.yaml", "0.1ot"): "9a025cd9aab2ffc6",
}


def test_a_new_switch_at_its_default_keeps_every_stored_key():
    from pathlib import Path

    from ablate.spec import load_spec

    root = Path(__file__).resolve().parents[1] / "experiments"
    runs = {}
    for spec in {s for s, _ in STORED_KEYS}:
        runs[spec] = {r.name: r for r in plan.expand(load_spec(root / spec), {"dataset": "ml-100k"})}
    assert {(s, n): runs[s][n].key for s, n in STORED_KEYS} == STORED_KEYS
    config = runs["notebook.yaml"]["default(wg32a)[dontchange]"].config
    key = STORED_KEYS[("notebook.yaml", "default(wg32a)[dontchange]")]
    added = models.ADDED_SETTINGS["LightGCNOT"]
    assert set(added) <= set(config)  # the model gets them; the key leaves them out
    for value in ({"bpr_weight": 1}, {"ot_normalize": "true"}, {"param_init": "xavier"}, {"n_node_centres": 0}):
        assert plan.run_key({**config, **value}) == key, value  # the default however written
    for value in ({"bpr_weight": 0.0}, {"ot_normalize": False}, {"param_init": "none"}, {"ot_groups": "joint"},
                  {"a2_weights": "counts"}, {"ot_z1_gat_input": 1}, {"ot_simgcl_input": "mean1"},
                  {"n_node_centres": 300}):
        assert plan.run_key({**config, **value}) != key, value
    assert plan.run_key({**config, "ot_normalize": 1}) != key  # not a bool: not the default
    assert versions.unkeyed({**config, "model": "SimGCL"}) == frozenset()  # other models: nothing left out


def test_recorded_labels():
    assert versions.recorded(None, "SimGCL") == "SimGCL@1+ablate@1"  # trained before labels existed
    assert versions.recorded({"torch": "2"}, "SimGCL") == "SimGCL@1+ablate@1"
    assert versions.is_current({"implementation": versions.label("SimGCL")}, "SimGCL")
    assert not versions.is_current({"torch": "2"}, "SimGCL")
    assert versions.is_current({"torch": "2"}, "BPR")  # version 1 then and now


@pytest.mark.skipif(models.VERSIONS.get("SimGCL", 1) < 2, reason="needs a model whose implementation changed")
def test_a_run_made_by_older_code_is_flagged_and_trained_again(tmp_path, make_spec):
    spec = make_spec(baselines={"SimGCL": {"model": "SimGCL"}})
    db = tmp_path / "results.db"
    first = _invoke("run", spec, "--db", db, "--jobs", "1")
    assert first.exit_code == 0, first.output
    with closing(sqlite3.connect(db)) as con, con:
        (rid, key, config, stored), = con.execute("SELECT id, key, config, versions FROM runs").fetchall()
        stored = json.loads(stored)
        assert stored["implementation"] == versions.label("SimGCL")
        # What the code before implementation versions left behind for this config.
        config = json.loads(config)
        ident = {k: v for k, v in config.items() if k not in plan.LOCAL_KEYS}
        import hashlib

        old_key = hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
                                 .encode()).hexdigest()[:16]
        assert old_key != key
        del stored["implementation"]
        con.execute("UPDATE runs SET key = ?, versions = ? WHERE id = ?", (old_key, json.dumps(stored), rid))

    table = _invoke("table", "tiny", "--db", db, "--md")
    assert table.exit_code == 0, table.output
    assert "trained by older code: SimGCL@1+ablate@1" in table.output
    status = _invoke("status", "tiny", "--db", db)
    assert status.exit_code == 0, status.output
    assert "1 run(s) trained by older code (SimGCL@1+ablate@1" in status.output

    again = _invoke("run", spec, "--db", db, "--jobs", "1")
    assert again.exit_code == 0, again.output
    with closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT key, status FROM runs ORDER BY id").fetchall()
    assert rows == [(old_key, "done"), (key, "done")]  # trained anew, the old row kept
    table = _invoke("table", "tiny", "--db", db, "--md")
    assert table.exit_code == 0 and "older code" not in table.output, table.output
    status = _invoke("status", "tiny", "--db", db)
    assert "older code" not in status.output

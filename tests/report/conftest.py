"""Fixtures for the report tests: one store filled by real short runs (module scope)."""

from __future__ import annotations

import pytest

from tests.specs import write_tiny


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains real models (tens of seconds)")


@pytest.fixture(scope="module")
def real_db(tmp_path_factory):
    """A store filled by ``ablate run`` on a tiny spec: 2 rows x 2 seeds, 1 epoch each."""
    from typer.testing import CliRunner

    from ablate.cli import app

    root = tmp_path_factory.mktemp("real")
    spec = write_tiny(root, topk=[10, 20, 50], seeds=[2020, 2021],
                      eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
                      baselines={"LightGCN": {"model": "LightGCN", "params": {"n_layers": 2}}},
                      variants={"L1": {"model": "LightGCN", "params": {"n_layers": 1}}})
    db = root / "r.db"
    res = CliRunner().invoke(app, ["run", str(spec), "--db", str(db), "--cpu"])
    assert res.exit_code == 0, res.output
    return {"db": db, "spec": spec}

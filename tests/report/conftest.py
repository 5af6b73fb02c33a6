"""Fixtures for the report tests: one store filled by real short runs (module scope)."""

from __future__ import annotations

import pytest

from tests.report.report_store import TINY_SPEC


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains real models (tens of seconds)")


@pytest.fixture(scope="module")
def real_db(tmp_path_factory):
    """A store filled by ``ablate run`` on a tiny spec: 2 rows x 2 seeds, 1 epoch each."""
    from typer.testing import CliRunner

    from ablate.cli import app

    root = tmp_path_factory.mktemp("real")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    db = root / "r.db"
    res = CliRunner().invoke(app, ["run", str(spec), "--db", str(db), "--cpu"])
    assert res.exit_code == 0, res.output
    return {"db": db, "spec": spec}

"""Fixtures for the Slurm executor tests: the two-run spec, submitit's local cluster, and
the reference results of the same spec under the local executor (computed once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_helpers import SPEC, cli, metrics_by_key


@pytest.fixture
def local_cluster(monkeypatch):
    """submitit's local executor: real subprocesses running the pickled job, no Slurm."""
    monkeypatch.setenv("ABLATE_SUBMITIT_CLUSTER", "local")


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "slurmtiny.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict[str, dict[tuple[str, str], float]]:
    """Metrics of the spec's two runs under the local executor, by run key."""
    folder = tmp_path_factory.mktemp("slurm-reference")
    spec_path = folder / "slurmtiny.yaml"
    spec_path.write_text(SPEC, encoding="utf-8")
    db = folder / "local.db"
    cli("run", spec_path, "--db", db, "--jobs", "1", "--cpu")
    out = metrics_by_key(db)
    assert len(out) == 2 and all(len(m) == 4 for m in out.values()), out
    return out

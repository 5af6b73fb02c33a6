"""Fixtures for the Slurm executor tests: the two-run spec, submitit's local cluster, the
reference results of the same spec under the local executor (computed once), and the real
services that ``ci/services.sh up`` brings up (a one-node Slurm cluster, PostgreSQL).

Tests marked ``real_slurm`` or ``real_postgres`` skip, each with its reason, where those
services are not there; under ``CI=true`` a skip is a failure (``tests/gates.py``), so CI
cannot pass without them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.slurm.slurm_helpers import SERVICES_ENV, SLOW_SPEC, SPEC, cli, metrics_by_key, services_env
from tests.stored import FullMetrics


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """The partition of the real one-node cluster; skips where there is none."""
    partition = services_env().get("ABLATE_TEST_SLURM_PARTITION")
    if not partition:
        pytest.skip(f"no real Slurm cluster (no {SERVICES_ENV}): run `ci/services.sh up` as root first")
    if shutil.which("sbatch") is None or shutil.which("sacct") is None:
        pytest.skip("no real Slurm cluster: sbatch/sacct are not on PATH")
    try:
        answer = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%a %T"], capture_output=True, text=True,
                                timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("no real Slurm cluster: sinfo did not answer within 20s")
    if answer.returncode != 0 or not answer.stdout.startswith("up"):
        pytest.skip(f"Slurm partition {partition!r} is not up: {(answer.stdout + answer.stderr).strip()[:200]}")
    return partition


@pytest.fixture
def real_slurm(slurm_partition, monkeypatch, tmp_path):
    """Submit to the real cluster (not submitit's local executor); yields the partition.
    Jobs a failed test left behind (submitted from its folder) are cancelled afterwards,
    so they do not hold the node's CPUs during the next test."""
    monkeypatch.delenv("ABLATE_SUBMITIT_CLUSTER", raising=False)
    yield slurm_partition
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30).stdout
    left = [job for job, _, workdir in (line.partition(" ") for line in queue.splitlines())
            if workdir.startswith(str(tmp_path))]
    if left:
        subprocess.run(["scancel", *left], capture_output=True, timeout=30)


@pytest.fixture
def local_cluster(monkeypatch):
    """submitit's local executor: real subprocesses running the pickled job, no Slurm."""
    monkeypatch.setenv("ABLATE_SUBMITIT_CLUSTER", "local")


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "slurmtiny.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


@pytest.fixture
def slow_spec(tmp_path: Path) -> Path:
    """:data:`slurm_helpers.SLOW_SPEC`: runs long enough to be stopped while they train."""
    path = tmp_path / "slurmslow.yaml"
    path.write_text(SLOW_SPEC, encoding="utf-8")
    return path


def _local_store(tmp_path_factory, text: str) -> Path:
    """A store holding a spec's runs done by the local executor."""
    folder = tmp_path_factory.mktemp("slurm-reference")
    spec_path = folder / "spec.yaml"
    spec_path.write_text(text, encoding="utf-8")
    db = folder / "local.db"
    cli("run", spec_path, "--db", db, "--jobs", "1", "--cpu")
    return db


def _two_runs(db: Path) -> dict[str, FullMetrics]:
    out = metrics_by_key(db)
    assert len(out) == 2 and all(len(m) == 4 for m in out.values()), out
    return out


@pytest.fixture(scope="session")
def reference_db(tmp_path_factory) -> Path:
    """A store holding the spec's two runs done by the local executor."""
    return _local_store(tmp_path_factory, SPEC)


@pytest.fixture(scope="session")
def reference(reference_db) -> dict[str, FullMetrics]:
    """Metrics of the spec's two runs under the local executor, by run key."""
    return _two_runs(reference_db)


@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory) -> dict[str, FullMetrics]:
    """Metrics of :data:`SLOW_SPEC`'s two runs under the local executor, by run key."""
    return _two_runs(_local_store(tmp_path_factory, SLOW_SPEC))

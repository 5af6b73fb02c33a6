"""The Slurm flow against a PostgreSQL store (teams share one server): the same code,
only portable SQL. Starts a throwaway server from the machine's PostgreSQL binaries;
skipped where there are none (or no psycopg driver)."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest
from test_fake_slurm import fake_slurm, slurm_flow  # noqa: F401 - fixture reused

PORT = 55433


@pytest.fixture
def postgres_url(tmp_path):
    pytest.importorskip("psycopg")
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("runuser")):
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) here")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to run the server as")
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="ablate-pg-"))  # pytest's tmp dirs are private to root
    base.chmod(0o755)
    shutil.chown(base, "postgres")

    def as_pg(*cmd):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=120)

    if as_pg("initdb", "-D", str(base / "data"), "-A", "trust", "-U", "ablate").returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("initdb failed")
    started = as_pg("pg_ctl", "-D", str(base / "data"), "-o", f"-k {base} -p {PORT} -h 127.0.0.1",
                    "-l", str(base / "log"), "-w", "start")
    if started.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {started.stdout.strip()[-200:]}")
    try:
        yield f"postgresql+psycopg://ablate@127.0.0.1:{PORT}/postgres?application_name=ablate-{uuid.uuid4().hex[:6]}"
    finally:
        as_pg("pg_ctl", "-D", str(base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_slurm_flow_on_postgresql(spec, tmp_path, fake_slurm, postgres_url):  # noqa: F811
    slurm_flow(spec, postgres_url, tmp_path / "shared", fake_slurm)


def test_one_primary_run_per_key_on_postgresql(postgres_url):
    """The partial unique index (one run per key, reruns exempt) exists on PostgreSQL too."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from ablate.store import Run, Store

    store = Store(postgres_url)
    with store.engine.connect() as conn:
        ddl = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_runs_key_primary'")).scalar()
    assert ddl is not None and "UNIQUE" in ddl and "WHERE (rerun_of IS NULL)" in ddl
    with store.session() as s:
        s.add(Run(key="k", name="r", model="LightGCN", dataset="ml-100k", seed=1, config={}))
    assert store.add_rerun(1) == 2  # same key, rerun_of set: allowed
    with pytest.raises(IntegrityError), store.session() as s:
        s.add(Run(key="k", name="r", model="LightGCN", dataset="ml-100k", seed=1, config={}))
    store.engine.dispose()

"""The store on a real PostgreSQL server (teams share one): sweeps, two coordinators of one
spec at once, a schema migration, ``ablate doctor`` and ``ablate table`` as on SQLite.

The server is the one ``ci/services.sh up`` started (each test gets a database of its own),
else a throwaway one started here from the machine's PostgreSQL binaries; without either,
or without the psycopg driver, these tests skip (and fail under CI=true)."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from ablate.store import SCHEMA_VERSION, Store

from tests.slurm.slurm_helpers import ablate, ablate_cmd, cli, metrics_by_key, real_args, services_env
from tests.slurm.test_fake_slurm import fake_slurm, slurm_flow  # noqa: F401 - fixture reused

pytestmark = pytest.mark.real_postgres


def free_port() -> int:
    """A TCP port nobody listens on now (the server started on it may still lose a race)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url(tmp_path):
    pytest.importorskip("psycopg", reason="no psycopg driver (pip install 'psycopg[binary]', in the test extra)")
    server = services_env().get("ABLATE_TEST_POSTGRES_URL")
    if server:
        yield from fresh_database(server)
    else:
        yield from throwaway_server()


def fresh_database(server: str):
    """A new database on the services' server, owned by its role; dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server)
    info = {"host": url.host, "port": url.port or 5432, "user": url.username, "password": url.password,
            "dbname": url.database, "connect_timeout": 10}
    name = f"ablate_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(**info, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as err:
        pytest.skip(f"PostgreSQL at {url.host}:{url.port} from {server.split('@')[-1]} is not usable: {err}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**info, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def throwaway_server():
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("runuser")):
        pytest.skip("no PostgreSQL server (run `ci/services.sh up` as root) and no initdb/pg_ctl here")
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
    for _ in range(3):  # a port taken between the check and the start: another one
        port = free_port()
        started = as_pg("pg_ctl", "-D", str(base / "data"), "-o", f"-k {base} -p {port} -h 127.0.0.1",
                        "-l", str(base / "log"), "-w", "start")
        if started.returncode == 0:
            break
    else:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {started.stdout.strip()[-200:]}")
    try:
        yield f"postgresql+psycopg://ablate@127.0.0.1:{port}/postgres?application_name=ablate-{uuid.uuid4().hex[:6]}"
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


def table(spec, db) -> str:
    return cli("table", spec, "--db", db, "--md", "-m", "recall@10,ndcg@10", "--precision", "6").output


def stored_once(run) -> None:
    assert (run.status, run.attempts) == ("done", 1), (run.status, run.attempts, run.error)
    assert [e.epoch for e in run.epochs] == [0] and len(run.metrics) == 4, (run.epochs, run.metrics)


def test_two_coordinators_of_one_spec_run_each_run_once(spec, tmp_path, postgres_url, reference_db, reference):
    """Two `ablate run` of one spec at the same moment against one server: the runs are
    claimed, not raced: each trains exactly once, and the table is SQLite's."""
    procs = [subprocess.Popen(ablate_cmd("run", spec, "--db", postgres_url, "--jobs", "1", "--cpu"), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = Store(postgres_url).runs()
    assert len(runs) == 2, [(r.id, r.name) for r in runs]
    for r in runs:
        stored_once(r)
    assert metrics_by_key(postgres_url) == reference
    assert table(spec, postgres_url) == table(spec, reference_db)
    res = cli("doctor", "--db", postgres_url)
    assert f"schema: version {SCHEMA_VERSION}, this ablate writes {SCHEMA_VERSION}" in res.output and res.output.rstrip().endswith("healthy"), res.output


@pytest.mark.real_slurm
def test_slurm_sweep_on_postgresql(spec, tmp_path, postgres_url, real_slurm, reference_db, reference):
    """The team's setup: the real cluster runs the jobs, the coordinator writes PostgreSQL."""
    out = ablate("run", spec, "--db", postgres_url, *real_args(real_slurm, tmp_path / "shared"), cwd=tmp_path).stdout
    assert "finished: 2 done" in out, out
    for r in Store(postgres_url).runs():
        stored_once(r)
        assert r.executor == "slurm" and r.job_id
    assert metrics_by_key(postgres_url) == reference
    assert table(spec, postgres_url) == table(spec, reference_db)


def test_schema_migration_on_postgresql(postgres_url):
    """A version-1 store on the server (no best_epoch/job_id/peak_mem_mb, schema 1) is
    upgraded in place by `ablate doctor`, keeping its rows; opening it again is a no-op."""
    from sqlalchemy import text

    from ablate.store import SCHEMA_VERSION, Run, Status

    store = Store(postgres_url)
    with store.session() as s:
        s.add(Run(key="k1", name="old", model="BPR", dataset="ml-100k", seed=7, config={"epochs": 1}))
    with store.engine.begin() as conn:  # what ablate's first schema looked like
        conn.execute(text("ALTER TABLE runs DROP COLUMN best_epoch, DROP COLUMN job_id, DROP COLUMN peak_mem_mb"))
        conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    store.engine.dispose()

    res = cli("doctor", "--db", postgres_url)
    assert f"schema: version {SCHEMA_VERSION}, this ablate writes {SCHEMA_VERSION}" in res.output, res.output
    assert res.output.rstrip().endswith("healthy"), res.output
    store = Store(postgres_url)
    with store.engine.connect() as conn:
        cols = set(conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'")).scalars())
        version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    assert {"best_epoch", "job_id", "peak_mem_mb"} <= cols and version == str(SCHEMA_VERSION)
    run = store.get_run(1)
    assert (run.name, run.seed, run.config, run.best_epoch, run.job_id) == ("old", 7, {"epochs": 1}, None, None)
    store.finish(1, Status.DONE, best_epoch=12, peak_mem_mb=1.5)
    store.engine.dispose()
    assert Store(postgres_url).get_run(1).best_epoch == 12  # a second open is a no-op

"""The results store: SQLAlchemy 2 ORM models and the few queries everybody needs.

Rules that keep results safe:

* Only a coordinator (``ablate run`` / ``ablate collect``) writes; workers report over a
  pipe or a result file. SQLite runs in WAL mode with a busy timeout, so readers never
  block the writer and two coordinators queue politely instead of failing with
  "database is locked".
* A run is *claimed* with one conditional ``UPDATE ... WHERE status = 'pending'``; the
  row count says who won. Two sweeps of the same spec on one database therefore
  execute every run exactly once.
* A coordinator stamps ``owner`` (host:pid:start) and a heartbeat on its running rows.
  Rows whose owner is dead (same host, pid gone) or silent for ``STALE_AFTER`` seconds
  are requeued by the next sweep.
* The schema carries a version; :data:`MIGRATIONS` upgrades older files in place.
"""

from __future__ import annotations

import enum
import os
import socket
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import (
    JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, create_engine,
    event, func, select, text, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from ablate.errors import StoreError
from ablate.storefile import SCHEMA_VERSION, to_url  # noqa: F401 - re-exported; they live where SQLAlchemy is not imported

STALE_AFTER = 120.0  # seconds without a heartbeat before another coordinator may requeue


class Status(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NAN = "nan"
    OOM = "oom"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    STALLED = "stalled"  # no progress for --stall-timeout: its worker was killed
    PRUNED = "pruned"  # stopped by ablate search's pruner after an epoch; its epochs are kept, never retried


PRIMARY_ONLY = "rerun_of IS NULL"  # a run that is not a rerun: one per key

RETRYABLE = (Status.FAILED, Status.NAN, Status.OOM, Status.TIMEOUT, Status.INTERRUPTED, Status.STALLED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Experiment(Base):
    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    spec_path: Mapped[str | None] = mapped_column(Text)
    spec_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    members: Mapped[list["Member"]] = relationship(back_populates="experiment", cascade="all, delete-orphan", order_by="Member.position")


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(300))
    model: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    epoch: Mapped[int | None] = mapped_column(Integer)  # last epoch reached (NaN: where it happened)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(300), index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    executor: Mapped[str | None] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(100))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    versions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    log_path: Mapped[str | None] = mapped_column(Text)
    peak_mem_mb: Mapped[float | None] = mapped_column(Float)
    rerun_of: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))

    metrics: Mapped[list["Metric"]] = relationship(back_populates="run", cascade="all, delete-orphan")
    epochs: Mapped[list["Epoch"]] = relationship(back_populates="run", cascade="all, delete-orphan", order_by="Epoch.epoch")

    __table_args__ = (
        # One primary run per key; reruns (rerun_of set) are extra rows for the same key.
        # PostgreSQL gets the same WHERE when the table is created there (see below).
        Index("uq_runs_key_primary", "key", unique=True, sqlite_where=text(PRIMARY_ONLY)),
    )

    def metric(self, split: str, name: str) -> float | None:
        for m in self.metrics:
            if m.split == split and m.name == name:
                return m.value
        return None


@event.listens_for(Run.__table__, "before_create")
def _postgresql_partial_index(table, connection, **_kw) -> None:
    """Make ``uq_runs_key_primary`` partial on PostgreSQL too. Declared in the Index as
    ``postgresql_where=``, it made SQLAlchemy import its PostgreSQL dialect (0.1 s) in
    every process, SQLite or not; here the dialect is only touched where it is in use."""
    if connection.dialect.name == "postgresql":
        index = next(i for i in table.indexes if i.name == "uq_runs_key_primary")
        index.dialect_options["postgresql"]["where"] = text(PRIMARY_ONLY)


class Member(Base):
    """A run's place in an experiment: its row name, role and declaration order."""

    __tablename__ = "experiment_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    row: Mapped[str] = mapped_column(String(300))
    variant: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)
    point: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    experiment: Mapped[Experiment] = relationship(back_populates="members")
    run: Mapped[Run] = relationship()
    __table_args__ = (UniqueConstraint("experiment_id", "run_id", name="uq_member"),)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16))  # valid | test
    name: Mapped[str] = mapped_column(String(64))  # recall@10 ...
    value: Mapped[float] = mapped_column(Float)  # as RecBole reports it: rounded to metric_decimal_place
    exact: Mapped[float | None] = mapped_column(Float)  # the unrounded mean RecBole rounds (None: not kept)
    run: Mapped[Run] = relationship(back_populates="metrics")
    __table_args__ = (UniqueConstraint("run_id", "split", "name", name="uq_metric"),)

    @property
    def full(self) -> float:
        """The value at full precision where it was kept, else RecBole's rounded one."""
        return self.value if self.exact is None else self.exact


class UserValues(Base):
    """Each evaluated user's metric values on one split of a run (``ablate.peruser``'s
    compact encoding), written with the run's result: what per-user tests pair."""

    __tablename__ = "per_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (UniqueConstraint("run_id", "split", name="uq_per_user"),)


class Epoch(Base):
    __tablename__ = "epochs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    losses: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # term name -> mean per batch
    train_seconds: Mapped[float | None] = mapped_column(Float)
    valid_score: Mapped[float | None] = mapped_column(Float)
    valid: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    run: Mapped[Run] = relationship(back_populates="epochs")
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch"),)


# ---------------------------------------------------------------------------- schema versions


def _migrate_1_to_2(conn) -> None:
    """v1 had no best_epoch / job_id / peak_mem_mb columns."""
    cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(runs)")} if conn.dialect.name == "sqlite" else set()
    if "best_epoch" not in cols:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN best_epoch INTEGER")
    if "job_id" not in cols:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN job_id VARCHAR(100)")
    if "peak_mem_mb" not in cols:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN peak_mem_mb FLOAT")


def _migrate_2_to_3(conn) -> None:
    """v2 kept RecBole's rounded metrics only: the unrounded mean goes beside it (the
    per-user table is new, made by ``create_all``)."""
    if conn.dialect.name == "sqlite":
        cols = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(metrics)")}
    else:
        from sqlalchemy import inspect

        cols = {c["name"] for c in inspect(conn).get_columns("metrics")}
    if "exact" not in cols:
        conn.exec_driver_sql("ALTER TABLE metrics ADD COLUMN exact FLOAT")


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}  # from version -> function upgrading to version + 1


# ---------------------------------------------------------------------------- engine


def default_url() -> str:
    return os.environ.get("ABLATE_DB") or "results.db"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # The driver's own transaction handling is switched off: ``_sqlite_begin`` starts every
    # transaction itself. busy_timeout comes first so that even switching to WAL waits.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn) -> None:
    """Start write transactions with ``BEGIN IMMEDIATE``.

    A deferred transaction that reads and then writes cannot wait for a concurrent
    writer in WAL mode: SQLite answers SQLITE_BUSY at once ("database is locked", the
    error Optuna users meet), busy_timeout or not. Taking the write lock up front makes
    two coordinators queue instead. Read-only sessions (``Store.read``) stay deferred so
    reports never wait on a sweep.
    """
    mode = "DEFERRED" if conn.get_execution_options().get("ablate_read_only") else "IMMEDIATE"
    conn.exec_driver_sql(f"BEGIN {mode}")


def _one_at_a_time(conn) -> None:
    """Serialise this transaction with others that call it, until it ends. SQLite's write
    transactions already are (``BEGIN IMMEDIATE``); on PostgreSQL a get-or-create would
    otherwise race to a unique-key error."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7126010)")


def make_engine(db: str) -> Engine:
    url = to_url(db)
    try:
        if url.startswith("sqlite"):
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                parent = Path(path).parent
                if not parent.exists():
                    raise StoreError(f"cannot open store {db}: folder {parent} does not exist")
            engine = create_engine(url, connect_args={"timeout": 60})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except ArgumentError as err:
        raise StoreError(f"cannot open store {db}: {err}") from None
    except ModuleNotFoundError as err:
        raise StoreError(f"cannot open store {db}: driver missing ({err.name})") from None
    _ENGINES.add(engine)
    return engine


_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def close_all() -> None:
    """Close the connections of every store this process opened (the CLI does, after each
    command).

    An engine sits in reference cycles of its own, so it outlives its ``Store`` and its
    pooled SQLite connection closes whenever the garbage collector gets to it; the last
    connection to close folds the write-ahead log into the database file. Closing at the
    end of the command puts that at a known moment (in-process callers, tests comparing
    the file before and after a command, saw it happen in the middle)."""
    for engine in list(_ENGINES):
        engine.dispose()


class Store:
    """A handle on one results database. Cheap to create; use one per process."""

    def __init__(self, db: str | None = None, create: bool = True):
        self.db = db or default_url()
        self.engine = make_engine(self.db)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._read_session = sessionmaker(self.engine.execution_options(ablate_read_only=True), expire_on_commit=False)
        try:
            self._ensure_schema(create)
        except (OperationalError, DatabaseError) as err:
            raise StoreError(f"cannot open store {self.db}: {str(err.orig).splitlines()[0]}") from None

    @property
    def path(self) -> Path | None:
        url = to_url(self.db)
        if url.startswith("sqlite:///"):
            return Path(url.split("sqlite:///", 1)[1])
        return None

    def _ensure_schema(self, create: bool) -> None:
        with self.engine.begin() as conn:
            _one_at_a_time(conn)  # coordinators opening a new database at once race on CREATE TABLE
            tables = set(conn.dialect.get_table_names(conn))
            if "runs" not in tables:
                if not create:
                    raise StoreError(f"{self.db} holds no ablate results")
                Base.metadata.create_all(conn)
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            if "meta" not in tables:
                Meta.__table__.create(conn)
            row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
            version = int(row) if row else 1
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.db} was written by a newer ablate (schema {version} > {SCHEMA_VERSION}); upgrade ablate")
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
            Base.metadata.create_all(conn)  # tables added since (idempotent)
            if row:
                conn.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(version)))
            else:
                conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(version)))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction (it holds SQLite's write lock until it ends: keep it short)."""
        with self._session() as s, s.begin():
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: a consistent snapshot that never blocks a writer."""
        with self._read_session() as s, s.begin():
            yield s

    # ------------------------------------------------------------------ experiments

    def sync_experiment(self, spec, runs) -> int:
        """Record a spec and its runs: new keys become pending runs, known keys are shared.

        Returns the experiment id. Membership is rewritten so the row order always follows
        the spec as it is now.
        """
        with self.session() as s:
            _one_at_a_time(s.connection())  # two coordinators of one spec: one creates, the other shares
            exp = s.scalar(select(Experiment).where(Experiment.name == spec.name))
            if exp is None:
                exp = Experiment(name=spec.name)
                s.add(exp)
            exp.spec_path = str(Path(spec.path).resolve()) if spec.path != "<string>" else None
            exp.spec_text = spec.source
            exp.updated_at = utcnow()
            s.flush()
            keys = {r.key for r in runs}
            existing = {
                r.key: r for r in s.scalars(select(Run).where(Run.key.in_(keys), Run.rerun_of.is_(None)))
            } if keys else {}
            for r in runs:
                if r.key not in existing:
                    row = Run(
                        key=r.key, name=r.name, model=r.model, dataset=str(r.config.get("dataset")),
                        seed=r.seed, config=r.config, status=Status.PENDING.value,
                    )
                    s.add(row)
                    existing[r.key] = row
            s.flush()
            exp.members.clear()
            s.flush()
            seen = set()
            for r in runs:
                rid = existing[r.key].id
                if rid in seen:
                    continue
                seen.add(rid)
                exp.members.append(Member(run_id=rid, row=r.name, variant=r.variant, role=r.role, position=r.position, point=r.point))
            return exp.id

    def experiment(self, name: str) -> Experiment | None:
        with self.read() as s:
            return s.scalar(select(Experiment).where(Experiment.name == name))

    def experiment_run_ids(self, experiment_id: int) -> list[int]:
        with self.read() as s:
            return list(s.scalars(select(Member.run_id).where(Member.experiment_id == experiment_id).order_by(Member.position)))

    # ------------------------------------------------------------------ queue

    def requeue(self, run_ids: Iterable[int], force: bool = False, retry: bool = True) -> dict[str, int]:
        """Make the given runs claimable again where appropriate.

        * stale ``running`` rows (owner dead or silent) -> pending, counted as interrupted;
        * failed / nan / oom / timeout / interrupted / stalled -> pending when ``retry``;
        * with ``force`` every non-running row -> pending.
        """
        ids = list(run_ids)
        counts = {"stale": 0, "retry": 0, "forced": 0}
        if not ids:
            return counts
        with self.session() as s:
            for run in s.scalars(select(Run).where(Run.id.in_(ids), Run.status == Status.RUNNING.value)):
                if is_stale(run):
                    counts["stale"] += self._reset(s, run.id, Status.RUNNING, owner=run.owner)
            if force:
                counts["forced"] += s.execute(
                    update(Run).where(Run.id.in_(ids), Run.status != Status.RUNNING.value, Run.status != Status.PENDING.value)
                    .values(status=Status.PENDING.value, owner=None)
                ).rowcount
            elif retry:
                counts["retry"] += s.execute(
                    update(Run).where(Run.id.in_(ids), Run.status.in_([x.value for x in RETRYABLE]))
                    .values(status=Status.PENDING.value, owner=None)
                ).rowcount
        return counts

    @staticmethod
    def _reset(s: Session, run_id: int, frm: Status, owner: str | None) -> int:
        return s.execute(
            update(Run).where(Run.id == run_id, Run.status == frm.value, Run.owner == owner)
            .values(status=Status.PENDING.value, owner=None, error="requeued: its coordinator died")
        ).rowcount

    def add_rerun(self, run_id: int, config: dict | None = None, key: str | None = None, seed: int | None = None) -> int:
        """A new pending run linked to ``run_id`` (``rerun_of``), outside every experiment's
        membership so tables keep showing the original. ``config``/``key``/``seed`` make a
        deliberate variation; by default the stored config is copied exactly."""
        with self.session() as s:
            orig = s.get(Run, run_id)
            if orig is None:
                raise StoreError(f"no run with id {run_id}")
            cfg = dict(orig.config if config is None else config)
            row = Run(key=key or orig.key, name=orig.name, model=str(cfg.get("model", orig.model)),
                      dataset=str(cfg.get("dataset", orig.dataset)), seed=orig.seed if seed is None else seed,
                      config=cfg, status=Status.PENDING.value, rerun_of=orig.id)
            s.add(row)
            s.flush()
            return row.id

    def claim(self, run_ids: list[int], owner: str) -> Run | None:
        """Atomically take the first pending run among ``run_ids`` (declaration order)."""
        for _ in range(len(run_ids) + 1):
            with self.session() as s:
                rid = s.scalar(
                    select(Run.id).outerjoin(Member, Member.run_id == Run.id)  # reruns have no Member row
                    .where(Run.id.in_(run_ids), Run.status == Status.PENDING.value)
                    .order_by(Member.position).limit(1)
                ) if run_ids else None
                if rid is None:
                    return None
                won = s.execute(
                    update(Run).where(Run.id == rid, Run.status == Status.PENDING.value).values(
                        status=Status.RUNNING.value, owner=owner, heartbeat_at=utcnow(), started_at=None,
                        ended_at=None, error=None, attempts=Run.attempts + 1, epoch=None, best_epoch=None, wall_seconds=None,
                    )
                ).rowcount
                if won:
                    s.query(Metric).filter(Metric.run_id == rid).delete()
                    s.query(Epoch).filter(Epoch.run_id == rid).delete()
                    s.query(UserValues).filter(UserValues.run_id == rid).delete()
                    return s.get(Run, rid)
        return None

    def adopt(self, run_id: int, old_owner: str, new_owner: str) -> bool:
        """Take over a running run from ``old_owner`` (a dead coordinator's cluster sweep):
        from now on only ``new_owner`` writes its events. False if it is no longer
        ``old_owner``'s running run (another coordinator took it, or it ended)."""
        with self.session() as s:
            return bool(s.execute(
                update(Run).where(Run.id == run_id, Run.owner == old_owner, Run.status == Status.RUNNING.value)
                .values(owner=new_owner, heartbeat_at=utcnow())).rowcount)

    def heartbeat(self, owner: str) -> None:
        with self.session() as s:
            s.execute(update(Run).where(Run.owner == owner, Run.status == Status.RUNNING.value).values(heartbeat_at=utcnow()))

    # ------------------------------------------------------------------ results (coordinator only)

    def mark_started(self, run_id: int, owner: str | None = None, **fields) -> bool:
        """Record where a run started. With ``owner``, only while that owner holds it."""
        fields.setdefault("started_at", utcnow())
        with self.session() as s:
            return bool(s.execute(update(Run).where(Run.id == run_id, *_held_by(owner)).values(**fields)).rowcount)

    def add_epoch(self, run_id: int, epoch: int, losses: dict | None = None, train_seconds: float | None = None,
                  valid_score: float | None = None, valid: dict | None = None, owner: str | None = None) -> bool:
        """Record one epoch. With ``owner``, only while that owner holds the run, so a
        coordinator that was presumed dead (and whose run was requeued) cannot mix its
        epochs into the new attempt."""
        with self.session() as s:
            if owner is not None and s.scalar(select(Run.id).where(Run.id == run_id, *_held_by(owner))) is None:
                return False
            row = s.scalar(select(Epoch).where(Epoch.run_id == run_id, Epoch.epoch == epoch))
            if row is None:
                row = Epoch(run_id=run_id, epoch=epoch)
                s.add(row)
            if losses is not None:
                row.losses = losses
            if train_seconds is not None:
                row.train_seconds = train_seconds
            if valid_score is not None:
                row.valid_score = valid_score
            if valid is not None:
                row.valid = valid
            s.execute(update(Run).where(Run.id == run_id).values(epoch=epoch, heartbeat_at=utcnow()))
            return True

    def finish(self, run_id: int, status: Status, *, metrics: dict[str, dict[str, float]] | None = None,
               error: str | None = None, owner: str | None = None, exact: dict[str, dict[str, float]] | None = None,
               per_user: dict[str, bytes] | None = None, **fields) -> bool:
        """Write a run's outcome. With ``owner``, only if that owner still holds it.

        ``metrics``: RecBole's values (rounded); ``exact``: the same means unrounded;
        ``per_user``: split -> encoded per-user values. All in the one transaction that
        sets the status, so a ``done`` run never lacks what was sent with it."""
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None or (owner is not None and (run.owner != owner or run.status != Status.RUNNING.value)):
                return False  # a late result of an attempt that was requeued: the store keeps the new one
            run.status = status.value
            run.error = error
            run.ended_at = utcnow()
            for k, v in fields.items():
                setattr(run, k, v)
            if run.started_at and run.wall_seconds is None:
                run.wall_seconds = (run.ended_at - run.started_at).total_seconds()
            if metrics:
                s.query(Metric).filter(Metric.run_id == run_id).delete()
                for split, values in metrics.items():
                    full = (exact or {}).get(split) or {}
                    for name, value in values.items():
                        unrounded = full.get(name)
                        s.add(Metric(run_id=run_id, split=split, name=name, value=float(value),
                                     exact=None if unrounded is None else float(unrounded)))
            if per_user:
                s.query(UserValues).filter(UserValues.run_id == run_id).delete()
                for split, data in per_user.items():
                    s.add(UserValues(run_id=run_id, split=split, data=bytes(data)))
            return True

    # ------------------------------------------------------------------ reading

    def runs(self, run_ids: Iterable[int] | None = None, *, with_children: bool = True) -> list[Run]:
        from sqlalchemy.orm import selectinload

        with self.read() as s:
            q = select(Run)
            if with_children:
                q = q.options(selectinload(Run.metrics), selectinload(Run.epochs))
            if run_ids is not None:
                q = q.where(Run.id.in_(list(run_ids)))
            return list(s.scalars(q.order_by(Run.id)))

    def get_run(self, run_id: int) -> Run | None:
        from sqlalchemy.orm import selectinload

        with self.read() as s:
            return s.scalar(select(Run).where(Run.id == run_id).options(selectinload(Run.metrics), selectinload(Run.epochs)))

    def counts(self, run_ids: list[int] | None = None) -> dict[str, int]:
        with self.read() as s:
            q = select(Run.status, func.count()).group_by(Run.status)
            if run_ids is not None:
                q = q.where(Run.id.in_(run_ids))
            return dict(s.execute(q).all())


    # ------------------------------------------------------------------ what executors and reports ask

    def peak_mem_mb(self, run_ids: list[int]) -> float | None:
        """The largest GPU memory peak recorded for runs of the same models and datasets as
        ``run_ids`` (``--per-gpu auto`` and ``--fuse auto`` size by it)."""
        from sqlalchemy import tuple_

        with self.read() as s:
            pairs = set(s.execute(select(Run.model, Run.dataset).where(Run.id.in_(run_ids))).all())
            if not pairs:
                return None
            return s.scalar(select(func.max(Run.peak_mem_mb)).where(
                tuple_(Run.model, Run.dataset).in_(list(pairs)), Run.peak_mem_mb.is_not(None)))

    def running(self, run_ids: Iterable[int] | None = None, owner_prefix: str | None = None,
                with_epochs: bool = False) -> list[Run]:
        """Runs now ``running`` (among ``run_ids``; owned by ``owner_prefix...``)."""
        from sqlalchemy.orm import selectinload

        with self.read() as s:
            q = select(Run).where(Run.status == Status.RUNNING.value)
            if owner_prefix is not None:
                q = q.where(Run.owner.like(owner_prefix + "%"))
            if run_ids is not None:
                q = q.where(Run.id.in_(list(run_ids)))
            if with_epochs:
                q = q.options(selectinload(Run.epochs))
            return list(s.scalars(q.order_by(Run.id)))

    def running_rows(self, run_ids: list[int] | None = None) -> list[dict]:
        """The running runs as plain dicts of what ``ablate status`` shows (one query)."""
        cols = [Run.id, Run.name, Run.device, Run.host, Run.epoch, Run.started_at, Run.heartbeat_at, Run.owner,
                Run.executor, Run.job_id]
        q = select(*cols).where(Run.status == Status.RUNNING.value).order_by(Run.id)
        if run_ids is not None:
            q = q.where(Run.id.in_(run_ids))
        with self.read() as s:
            return [dict(r._mapping) for r in s.execute(q)]

    def set_job_ids(self, job_ids: dict[int, str], executor: str) -> None:
        """Record the cluster job each run was submitted in."""
        with self.session() as s:
            for rid, jid in job_ids.items():
                s.execute(update(Run).where(Run.id == rid).values(job_id=jid, executor=executor))

    def save_sweep(self, owner: str, record: dict) -> None:
        """Keep what a cluster sweep's coordinator must know to collect its runs later, from
        any machine that sees this store (the jobs' folder, the cluster kind)."""
        import json

        with self.session() as s:
            row = s.get(Meta, owner)
            if row is None:
                s.add(Meta(key=owner, value=json.dumps(record)))
            else:
                row.value = json.dumps(record)

    def sweeps(self, owners: Iterable[str]) -> dict[str, dict]:
        """The records :meth:`save_sweep` kept for these owners (those it has)."""
        import json

        keys = sorted(set(owners))
        if not keys:
            return {}
        with self.read() as s:
            rows = s.execute(select(Meta.key, Meta.value).where(Meta.key.in_(keys))).all()
        return {k: json.loads(v) for k, v in rows}

    def members(self, experiment_name: str) -> list[Member]:
        """An experiment's members in row order, each with its run, metrics and epochs
        loaded (empty when there is no such experiment)."""
        from sqlalchemy.orm import selectinload

        with self.read() as s:
            exp = s.scalar(select(Experiment).where(Experiment.name == experiment_name))
            if exp is None:
                return []
            return list(s.scalars(
                select(Member).where(Member.experiment_id == exp.id).order_by(Member.position)
                .options(selectinload(Member.run).selectinload(Run.metrics),
                         selectinload(Member.run).selectinload(Run.epochs))))

    def per_user(self, run_ids: Iterable[int], split: str = "test") -> dict[int, bytes]:
        """The encoded per-user values of these runs on ``split`` (runs without any left out)."""
        ids = list(run_ids)
        if not ids:
            return {}
        with self.read() as s:
            rows = s.execute(select(UserValues.run_id, UserValues.data)
                             .where(UserValues.run_id.in_(ids), UserValues.split == split)).all()
        return {int(r): bytes(d) for r, d in rows}

    def primary_run_id(self, key: str) -> int | None:
        """The id of the run (not a rerun) stored under ``key``."""
        with self.read() as s:
            return s.scalar(select(Run.id).where(Run.key == key, Run.rerun_of.is_(None)))

    def baselines_beside(self, run_id: int) -> list[tuple[str, int, int]]:
        """``(row, run id, seed)`` of the baseline runs of every experiment that holds
        ``run_id``, in row order."""
        with self.read() as s:
            exp_ids = list(s.scalars(select(Member.experiment_id).where(Member.run_id == run_id)))
            if not exp_ids:
                return []
            return [tuple(r) for r in s.execute(
                select(Member.row, Run.id, Run.seed).join(Run, Run.id == Member.run_id)
                .where(Member.experiment_id.in_(exp_ids), Member.role == "baseline").order_by(Member.position)).all()]


def open_existing(db: str) -> Store:
    """A store to read that must already exist: a missing SQLite file is an error, not a
    new empty file."""
    from ablate.storefile import store_exists

    if not store_exists(db):
        raise StoreError(f"no results store at {db} (run `ablate run SPEC --db {db}` first)")
    return Store(db, create=False)


# ---------------------------------------------------------------------------- health (ablate doctor)


def integrity(path: Path) -> list[str]:
    """SQLite's own ``PRAGMA integrity_check`` on a file, read-only: ``[]`` when sound.

    Opened with the plain driver so a damaged file is still examined, not refused."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
            rows += [f"foreign key: {r[0]} row {r[1]} -> {r[2]}" for r in con.execute("PRAGMA foreign_key_check")]
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        return [str(err)]
    return [] if rows == ["ok"] else rows


@dataclass
class Health:
    """What ``ablate doctor`` reports about a store (empty lists: nothing wrong)."""

    schema_version: int
    stale: list[Run] = field(default_factory=list)  # running, but its coordinator is gone
    running: list[Run] = field(default_factory=list)  # running under a live coordinator
    done_without_test: list[int] = field(default_factory=list)
    orphans: dict[str, int] = field(default_factory=dict)  # table -> rows pointing nowhere


def health(store: "Store") -> Health:
    with store.read() as s:
        version = int(s.scalar(select(Meta.value).where(Meta.key == "schema_version")) or 1)
        running = list(s.scalars(select(Run).where(Run.status == Status.RUNNING.value).order_by(Run.id)))
        with_test = select(Metric.run_id).where(Metric.split == "test")
        done_bad = list(s.scalars(select(Run.id).where(Run.status == Status.DONE.value, Run.id.not_in(with_test)).order_by(Run.id)))
        run_ids = select(Run.id)
        orphans = {
            "experiment_runs": s.scalar(select(func.count()).select_from(Member).where(
                Member.run_id.not_in(run_ids) | Member.experiment_id.not_in(select(Experiment.id)))),
            "metrics": s.scalar(select(func.count()).select_from(Metric).where(Metric.run_id.not_in(run_ids))),
            "epochs": s.scalar(select(func.count()).select_from(Epoch).where(Epoch.run_id.not_in(run_ids))),
            "runs": s.scalar(select(func.count()).select_from(Run).where(
                Run.rerun_of.is_(None), Run.id.not_in(select(Member.run_id)))),
        }
    stale = [r for r in running if is_stale(r)]
    return Health(version, stale, [r for r in running if r not in stale], done_bad, {k: v for k, v in orphans.items() if v})


# ---------------------------------------------------------------------------- owners


def _held_by(owner: str | None) -> tuple:
    """Extra WHERE terms: the run is still held by ``owner`` (nothing when owner is None)."""
    return () if owner is None else (Run.owner == owner, Run.status == Status.RUNNING.value)


def _proc_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - any failure means "not that process"
        return None


def make_owner() -> str:
    """``host:pid:start`` of this process; start time guards against pid reuse."""
    pid = os.getpid()
    start = _proc_start(pid) or time.time()
    return f"{socket.gethostname()}:{pid}:{start:.0f}"


def owner_alive(owner: str | None) -> bool | None:
    """True/False when it can be told from here (same host), None otherwise."""
    if not owner:
        return False
    try:
        host, pid, start = owner.rsplit(":", 2)
        pid_i, start_f = int(pid), float(start)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    created = _proc_start(pid_i)
    return created is not None and abs(created - start_f) < 2


def is_stale(run: Run, now: datetime | None = None) -> bool:
    if (run.owner or "").startswith("slurm:"):
        return False  # a Slurm job outlives its coordinator; ablate.executors.slurm reads the job's state
    alive = owner_alive(run.owner)
    if alive is False:
        return True
    if run.heartbeat_at is None:
        return alive is None
    age = ((now or utcnow()) - run.heartbeat_at).total_seconds()
    return age > STALE_AFTER if alive is None else False


"""Read an experiment out of the store into pandas: one row per table row, seeds folded.

Two queries, whatever the size of the experiment: members joined with their runs, then
the metrics of those runs (a join on the membership, not a list of ids, so 10,000 runs
cost the same two round trips). pandas does the grouping; nothing here touches the ORM.

Every query is plain SQL run in one read-only :class:`Snapshot`. A SQLite store at the
current schema is read with the standard library's ``sqlite3``: a report then never
imports SQLAlchemy, whose import took longer than reading a 10,000-run table. Any other
store (PostgreSQL, or a SQLite file that still needs an upgrade) is opened with
:class:`~ablate.store.Store` and the same SQL runs on its engine.

A table row is a ``Member.row`` name: runs that differ only by seed share it. Several
experiments can be read together; a row appearing in more than one (a shared baseline)
is one row, its runs counted once.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from ablate.errors import UsageError

DONE = "done"  # Status.DONE.value (ablate.store is not imported: it imports SQLAlchemy)


def __getattr__(name: str):
    if name == "Store":  # ``frame.Store`` as before, imported only when asked for
        from ablate.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ExperimentFrame:
    """Everything a table or plot needs about the runs of one or more experiments.

    ``runs``: one line per (row, run): run_id, row, variant, role, position, point,
    seed, status, model, key, config. ``values``: per-seed metric values of done runs,
    index (row, seed), one column per metric. ``mean`` / ``std`` / ``n``: the same folded
    over seeds (std is the sample std, NaN for one seed). ``rows``: row names in
    declaration order (minimum position; baselines first as declared).
    """

    names: list[str]
    runs: pd.DataFrame
    values: pd.DataFrame
    rows: list[str]
    role: dict[str, str]
    mean: pd.DataFrame = field(init=False)
    std: pd.DataFrame = field(init=False)
    n: pd.Series = field(init=False)

    def __post_init__(self) -> None:
        grouped = self.values.groupby(level="row", sort=False)
        self.mean = grouped.mean().reindex(self.rows)
        self.std = grouped.std(ddof=1).reindex(self.rows)
        self.n = grouped.size().reindex(self.rows).fillna(0).astype(int)
        # Per-row lookups computed once (a per-row filter would be quadratic in runs).
        self._status: dict[str, dict[str, int]] = {}
        self._ids: dict[str, list[int]] = {}
        if not self.runs.empty:
            for (row, status), count in self.runs.groupby(["row", "status"], sort=False).size().items():
                self._status.setdefault(row, {})[status] = int(count)
            for row, rid in zip(self.runs["row"], self.runs["run_id"]):  # rows are unique per (row, run)
                self._ids.setdefault(row, []).append(int(rid))

    def row_status(self, row: str) -> dict[str, int]:
        """Counts of run statuses in a row, e.g. ``{"done": 2, "running": 1}``."""
        return dict(self._status.get(row, {}))

    def run_ids(self, row: str | None = None) -> list[int]:
        if row is not None:
            return list(self._ids.get(row, []))
        return [int(x) for x in self.runs["run_id"].unique()]

    def per_seed(self, metric: str) -> pd.DataFrame:
        """One metric as a rows x seeds matrix (NaN where a seed is missing)."""
        if metric not in self.values.columns:
            return pd.DataFrame()
        return self.values[metric].unstack("seed")


def read_connection(store):
    """A connection whose transactions are read-only snapshots (``BEGIN DEFERRED``): a
    report never takes SQLite's write lock, so it neither waits on nor delays a sweep."""
    return store.engine.execution_options(ablate_read_only=True).connect()


class Snapshot:
    """One read-only transaction on a store: every query of a report sees the same data.

    ``rows(sql, params)`` runs plain SQL with ``:name`` parameters (the syntax both
    ``sqlite3`` and SQLAlchemy's ``text()`` take) and returns plain tuples; JSON columns
    come back as stored (text on SQLite), see :func:`json_values`.
    """

    def __init__(self, db: str, fetch):
        self.db = db
        self._fetch = fetch

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        return self._fetch(sql, params or {})


@contextmanager
def snapshot(source) -> Iterator[Snapshot]:
    """A :class:`Snapshot` of ``source``: a Snapshot (used as is), a
    :class:`~ablate.store.Store`, or a ``--db`` value (path or URL) of an existing store."""
    if isinstance(source, Snapshot):
        yield source
        return
    if isinstance(source, str):
        con = _sqlite_current(source)
        if con is not None:
            try:
                yield Snapshot(source, lambda sql, params: con.execute(sql, params).fetchall())
            finally:
                con.close()
            return
        from ablate.store import Store

        source = Store(source, create=False)  # upgrades an old file, or says what is wrong
    from sqlalchemy import text

    with read_connection(source) as conn, conn.begin():
        yield Snapshot(source.db, lambda sql, params: [tuple(r) for r in conn.execute(text(sql), params)])


def _sqlite_current(db: str):
    """A ``sqlite3`` connection in a read-only transaction when ``db`` is a SQLite file at
    this ablate's schema; None otherwise (the caller goes through Store)."""
    import sqlite3

    from ablate.storefile import SCHEMA_VERSION, sqlite_path

    path = sqlite_path(db)
    if path is None or not path.is_file():
        return None
    con = sqlite3.connect(path, timeout=60, isolation_level=None)  # transactions are begun here
    try:
        con.execute("PRAGMA query_only = ON")  # this connection cannot write, whatever it runs
        con.execute("BEGIN DEFERRED")  # the snapshot starts at the first read; no write lock
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
        if version is not None and version[0] == str(SCHEMA_VERSION) and {"experiments", "runs", "experiment_runs", "metrics", "epochs"} <= tables:
            return con
    except sqlite3.DatabaseError:
        pass  # not a database, or locked for a minute: Store reports it in its own words
    con.close()
    return None


def json_values(values: list) -> list:
    """Decode stored JSON column values (SQLite returns text; other drivers may decode).

    Many values are parsed as one JSON array: 20,000 ``json.loads`` calls cost more than
    the rest of a 10,000-run table."""
    at = [i for i, v in enumerate(values) if isinstance(v, str)]  # the rest: NULL, or decoded by the driver
    if not at:
        return list(values)
    decoded = json.loads("[" + ",".join(values[i] for i in at) + "]")
    if len(at) == len(values):
        return decoded
    out = list(values)
    for i, v in zip(at, decoded):
        out[i] = v
    return out


def _in(values: list, prefix: str, params: dict) -> str:
    """``(:p0, :p1, ...)`` for an IN list, its values added to ``params``."""
    names = [f"{prefix}{i}" for i in range(len(values))]
    params.update(zip(names, values))
    return "(" + ", ".join(f":{n}" for n in names) + ")"


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    ids = sorted(set(int(i) for i in ids))
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def experiment_names(source) -> list[str]:
    """Stored experiment names, most recently updated first."""
    with snapshot(source) as snap:
        return [r[0] for r in snap.rows("SELECT name FROM experiments ORDER BY updated_at DESC, id DESC")]


def resolve_targets(source, targets: list[str] | None, overrides: dict | None = None) -> list[str]:
    """Turn command-line targets (spec files or stored experiment names) into stored names.

    With no target, the most recently updated experiment. Unknown names are a one-line
    usage error listing what the store holds.
    """
    from pathlib import Path

    with snapshot(source) as snap:
        known = experiment_names(snap)
        db = snap.db
    if not targets:
        if not known:
            raise UsageError(f"{db} holds no experiments yet (run `ablate run SPEC` first)")
        return [known[0]]
    names = []
    for target in targets:
        p = Path(target)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            from ablate import plan, spec as spec_mod

            spec = spec_mod.load_spec(p)
            name = plan.experiment_name(spec, overrides)
            if name not in known:
                raise UsageError(f"experiment {name!r} (from {target}) is not in {db}; run `ablate run {target}` first")
        else:
            name = target
            if name not in known:
                listing = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
                raise UsageError(f"no experiment named {name!r} in {db} (known: {listing})")
        names.append(name)
    return names


def _member_runs(snap: Snapshot, names: list[str], with_config: bool = False) -> pd.DataFrame:
    params: dict = {}
    rows = snap.rows(
        'SELECT m.run_id, m."row", m.variant, m.role, m."position", '
        + ('m.point, ' if with_config else 'NULL, ')
        + 'e.name, r.seed, r.status, r.model, r."key", '
        + ('r.config ' if with_config else 'NULL ')
        + "FROM experiment_runs m JOIN experiments e ON e.id = m.experiment_id JOIN runs r ON r.id = m.run_id "
        + f"WHERE e.name IN {_in(names, 'n', params)}",
        params,
    )
    cols = ["run_id", "row", "variant", "role", "position", "point", "experiment", "seed", "status", "model", "key", "config"]
    df = pd.DataFrame(rows, columns=cols)
    if with_config and rows:
        df["point"] = json_values(df["point"].tolist())
        df["config"] = json_values(df["config"].tolist())
    order = {n: i for i, n in enumerate(names)}
    df["exp_order"] = df["experiment"].map(order)
    df = df.sort_values(["exp_order", "position"], kind="stable")
    return df.drop_duplicates(["row", "run_id"]).reset_index(drop=True)


def _metric_values(snap: Snapshot, names: list[str], split: str) -> pd.DataFrame:
    params: dict = {"split": split}
    rows = snap.rows(
        "SELECT x.run_id, x.name, x.value FROM metrics x "
        "JOIN (SELECT DISTINCT m.run_id FROM experiment_runs m JOIN experiments e ON e.id = m.experiment_id "
        f"WHERE e.name IN {_in(names, 'n', params)}) s ON s.run_id = x.run_id "
        "WHERE x.split = :split",
        params,
    )
    return pd.DataFrame(rows, columns=["run_id", "name", "value"])


def load(source, names: list[str], split: str = "test", with_config: bool = False) -> ExperimentFrame:
    """Read the named experiments (in that order) with metrics of ``split``; each run's
    grid point and full config only when asked (plots), as JSON decoding is the costly part.
    ``source``: a Store, a Snapshot or a ``--db`` value."""
    if split not in ("test", "valid"):
        raise UsageError(f"--split must be test or valid, got {split!r}")
    with snapshot(source) as snap:
        runs = _member_runs(snap, names, with_config)
        long = _metric_values(snap, names, split)
    order: list[str] = []
    role: dict[str, str] = {}
    if not runs.empty:
        # Baselines first as declared, then variants by their first position.
        first = runs.groupby("row", sort=False).agg(position=("position", "min"), exp=("exp_order", "min"),
                                                    role=("role", "first"))
        first["is_variant"] = first["role"] != "baseline"
        first = first.sort_values(["is_variant", "exp", "position"], kind="stable")
        order = list(first.index)
        role = first["role"].to_dict()
    done = runs[runs["status"] == DONE][["run_id", "row", "seed"]]
    if long.empty or done.empty:
        values = pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["row", "seed"]))
    else:
        wide = long.pivot_table(index="run_id", columns="name", values="value", aggfunc="first")
        wide.columns.name = None
        values = done.merge(wide, left_on="run_id", right_index=True, how="inner")
        # A row holds one run per seed; a shared run listed twice counts once.
        values = values.drop_duplicates(["row", "seed"]).set_index(["row", "seed"]).drop(columns="run_id")
    return ExperimentFrame(names=names, runs=runs, values=values, rows=order, role=role)


def _epochs(snap: Snapshot, run_ids: list[int], columns: str) -> list[tuple]:
    """Epoch rows of the given runs ordered by run and epoch (ids in chunks: SQL
    parameter counts are limited)."""
    out: list[tuple] = []
    for chunk in _chunks(run_ids):
        params: dict = {}
        out += snap.rows(f"SELECT {columns} FROM epochs WHERE run_id IN {_in(chunk, 'r', params)} ORDER BY run_id, epoch",
                         params)
    return out


def epoch_losses(source, run_ids: list[int]) -> pd.DataFrame:
    """Per-epoch loss terms of the given runs: columns run_id, epoch, then one per term
    in the order the model reported them (the first is the main loss)."""
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "epoch"])
    with snapshot(source) as snap:
        rows = _epochs(snap, run_ids, "run_id, epoch, losses, valid_score")
    records, terms = [], []
    for (rid, ep, _, valid_score), losses in zip(rows, json_values([r[2] for r in rows])):
        rec = {"run_id": rid, "epoch": ep, "valid_score": valid_score}
        for k, v in (losses or {}).items():
            if k not in terms:
                terms.append(k)
            rec[k] = v
        records.append(rec)
    return pd.DataFrame(records, columns=["run_id", "epoch", "valid_score", *terms])


def loss_history(source, run_ids: list[int]) -> dict[int, list[dict[str, float]]]:
    """Each run's per-epoch loss-term dicts, epoch order kept; the first key is the main loss."""
    out: dict[int, list[dict[str, float]]] = {}
    if not run_ids:
        return out
    with snapshot(source) as snap:
        rows = _epochs(snap, run_ids, "run_id, losses")
    for (rid, _), losses in zip(rows, json_values([r[1] for r in rows])):
        if losses:
            out.setdefault(int(rid), []).append(losses)
    return out

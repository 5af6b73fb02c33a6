"""Read an experiment out of the store: one row per table row, seeds folded.

Two queries, whatever the size of the experiment: members joined with their runs, then
the metrics of those runs (a join on the membership, not a list of ids, so 10,000 runs
cost the same two round trips). Nothing here touches the ORM.

Every query is plain SQL run in one read-only :class:`Snapshot`. A SQLite store at the
current schema is read with the standard library's ``sqlite3``: a report then never
imports SQLAlchemy, whose import took longer than reading a 10,000-run table. Any other
store (PostgreSQL, or a SQLite file that still needs an upgrade) is opened with
:class:`~ablate.store.Store` and the same SQL runs on its engine.

The folding itself is numpy (per-row means and sample stds, see :func:`_fold`);
pandas views of the same data (``runs``, ``values``, ``mean``, ``std``, ``n``) are
built on first use, so a Markdown table never imports pandas either.

A table row is a ``Member.row`` name: runs that differ only by seed share it. Several
experiments can be read together; a row appearing in more than one (a shared baseline)
is one row, its runs counted once.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ablate.errors import OptionError, UsageError

if TYPE_CHECKING:
    import pandas as pd

DONE = "done"  # Status.DONE.value (ablate.store is not imported: it imports SQLAlchemy)
RUN_COLUMNS = ["run_id", "row", "variant", "role", "position", "point", "experiment", "seed", "status", "model", "key",
               "config", "exp_order"]


def __getattr__(name: str):
    if name == "Store":  # ``frame.Store`` as before, imported only when asked for
        from ablate.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ExperimentFrame:
    """Everything a table or plot needs about the runs of one or more experiments.

    ``records``: one tuple per (row, run), fields :data:`RUN_COLUMNS`, in declaration
    order. ``rows``: row names in declaration order (baselines first as declared, then
    by first position); ``role``: row -> role. ``metrics``: the recorded metric names
    (sorted). ``pairs``: the (row, seed) of each done run with metrics, one per row and
    seed, and ``matrix`` their values (pairs x metrics, NaN where one is missing).

    Per row, aligned with ``rows``: ``counts`` (seeds with results), ``means`` and
    ``stds`` (rows x metrics; std is the sample std, NaN for one seed).

    pandas views, built when first asked for: ``runs`` (a DataFrame of the records),
    ``values`` (``matrix`` indexed by (row, seed)), ``mean`` / ``std`` (rows x metrics)
    and ``n`` (seeds per row).
    """

    def __init__(self, names: list[str], records: list[tuple], rows: list[str], role: dict[str, str],
                 metrics: list[str], pairs: list[tuple], matrix: np.ndarray, pair_runs: list[int] | None = None):
        self.names, self.records, self.rows, self.role = names, records, rows, role
        self.metrics, self.pairs, self.matrix = metrics, pairs, matrix
        self.pair_runs = list(pair_runs or [])  # the run id of each (row, seed) pair
        at = {r: i for i, r in enumerate(rows)}
        pair_row = np.array([at[r] for r, _ in pairs], dtype=np.intp)
        self.counts = np.bincount(pair_row, minlength=len(rows)).astype(np.int64)
        self.means, self.stds = _fold(pair_row, matrix, len(rows))
        # Per-row lookups computed once (a per-row filter would be quadratic in runs).
        self._status: dict[str, dict[str, int]] = {}
        self._ids: dict[str, list[int]] = {}
        for rec in records:  # unique per (row, run)
            counts = self._status.setdefault(rec[1], {})
            counts[rec[8]] = counts.get(rec[8], 0) + 1
            self._ids.setdefault(rec[1], []).append(int(rec[0]))

    def row_status(self, row: str) -> dict[str, int]:
        """Counts of run statuses in a row, e.g. ``{"done": 2, "running": 1}``."""
        return dict(self._status.get(row, {}))

    def run_ids(self, row: str | None = None) -> list[int]:
        if row is not None:
            return list(self._ids.get(row, []))
        return list(dict.fromkeys(int(rec[0]) for rec in self.records))

    def done_variant_ids(self) -> list[int]:
        """Ids of the finished runs of variant rows (whose loss terms a table checks)."""
        return [int(rec[0]) for rec in self.records if rec[3] != "baseline" and rec[8] == DONE]

    def column(self, metric: str, of: str = "means") -> np.ndarray:
        """One metric's per-row ``means`` or ``stds`` (NaN when it was not recorded)."""
        if metric not in self.metrics:
            return np.full(len(self.rows), np.nan)
        return getattr(self, of)[:, self.metrics.index(metric)]

    def seed_matrix(self, metric: str) -> np.ndarray:
        """One metric as rows x seeds (all seeds seen, NaN where a row lacks one)."""
        seeds = sorted({seed for _, seed in self.pairs})
        out = np.full((len(self.rows), len(seeds)), np.nan)
        if metric in self.metrics and self.pairs:
            at, col = {r: i for i, r in enumerate(self.rows)}, {s: j for j, s in enumerate(seeds)}
            out[[at[r] for r, _ in self.pairs], [col[s] for _, s in self.pairs]] = self.matrix[:, self.metrics.index(metric)]
        return out

    # ------------------------------------------------------------------ pandas views

    @cached_property
    def runs(self):
        import pandas as pd

        return pd.DataFrame(self.records, columns=RUN_COLUMNS)

    @cached_property
    def values(self):
        import pandas as pd

        if not self.metrics:
            return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["row", "seed"]))
        index = pd.MultiIndex.from_arrays([pd.Series([r for r, _ in self.pairs], dtype="str"),
                                           np.array([s for _, s in self.pairs], dtype=np.int64)], names=["row", "seed"])
        return pd.DataFrame(self.matrix, index=index, columns=list(self.metrics))

    @cached_property
    def mean(self):
        return self._per_row(self.means)

    @cached_property
    def std(self):
        return self._per_row(self.stds)

    @cached_property
    def n(self):
        import pandas as pd

        return pd.Series(self.counts, index=pd.Index(self.rows, dtype="str", name="row"))

    def _per_row(self, data: np.ndarray):
        import pandas as pd

        return pd.DataFrame(data, index=pd.Index(self.rows, dtype="str", name="row"), columns=list(self.metrics))

    def per_seed(self, metric: str):
        """One metric as a rows x seeds DataFrame (NaN where a seed is missing)."""
        import pandas as pd

        if metric not in self.values.columns:
            return pd.DataFrame()
        return self.values[metric].unstack("seed")


def _fold(pair_row: np.ndarray, matrix: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and sample std (ddof 1) of ``matrix`` (pairs x metrics), NaN skipped.

    The mean is the sum of a row's values in declaration order over their count (what
    ``Series.mean`` gives for a row's few seeds), the variance Welford's running update
    (as pandas' groupby). Vectorised over rows and metrics, one step per seed (rows have
    few), never one per value.
    """
    n_metrics = matrix.shape[1]
    total, count = np.zeros((n_rows, n_metrics)), np.zeros((n_rows, n_metrics))
    w_mean, w_m2 = np.zeros((n_rows, n_metrics)), np.zeros((n_rows, n_metrics))
    # the k-th value of each row, k = 0, 1, ...: pairs in order, numbered within their row
    order = np.argsort(pair_row, kind="stable")
    sorted_rows = pair_row[order]
    slot = np.empty(len(pair_row), dtype=np.intp)
    slot[order] = np.arange(len(pair_row)) - np.searchsorted(sorted_rows, sorted_rows, side="left")
    for k in range(int(slot.max()) + 1 if len(slot) else 0):
        take = slot == k
        r, x = pair_row[take], matrix[take]
        ok = ~np.isnan(x)
        total[r] = np.where(ok, total[r] + x, total[r])
        n1 = count[r] + ok
        old = w_mean[r]
        with np.errstate(invalid="ignore", divide="ignore"):
            new = np.where(ok, old + (x - old) / n1, old)
        w_m2[r] = np.where(ok, w_m2[r] + (x - new) * (x - old), w_m2[r])
        w_mean[r], count[r] = new, n1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        std = np.where(count > 1, np.sqrt(w_m2 / (count - 1)), np.nan)
    return mean, std


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
        if version is not None and version[0] == str(SCHEMA_VERSION) and {"experiments", "runs", "experiment_runs", "metrics", "epochs", "per_user"} <= tables:
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


def _member_runs(snap: Snapshot, names: list[str], with_config: bool = False) -> list[tuple]:
    """(row, run) records (:data:`RUN_COLUMNS`) in declaration order: by experiment as
    named, then position; a run listed twice in a row counts once."""
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
    if with_config and rows:
        points, configs = json_values([r[5] for r in rows]), json_values([r[11] for r in rows])
        rows = [(*r[:5], p, *r[6:11], c) for r, p, c in zip(rows, points, configs)]
    order = {n: i for i, n in enumerate(names)}
    rows = sorted(((*r, order[r[6]]) for r in rows), key=lambda r: (r[12], r[4]))  # stable
    seen: set = set()
    out = []
    for r in rows:
        if (r[1], r[0]) not in seen:
            seen.add((r[1], r[0]))
            out.append(r)
    return out


def _metric_values(snap: Snapshot, names: list[str], split: str) -> list[tuple]:
    """(run_id, name, value) of the metrics of ``split`` of the experiments' runs."""
    params: dict = {"split": split}
    return snap.rows(
        "SELECT x.run_id, x.name, COALESCE(x.exact, x.value) FROM metrics x "
        "JOIN (SELECT DISTINCT m.run_id FROM experiment_runs m JOIN experiments e ON e.id = m.experiment_id "
        f"WHERE e.name IN {_in(names, 'n', params)}) s ON s.run_id = x.run_id "
        "WHERE x.split = :split",
        params,
    )


def load(source, names: list[str], split: str = "test", with_config: bool = False) -> ExperimentFrame:
    """Read the named experiments (in that order) with metrics of ``split``; each run's
    grid point and full config only when asked (plots), as JSON decoding is the costly part.
    ``source``: a Store, a Snapshot or a ``--db`` value."""
    if split not in ("test", "valid"):
        raise OptionError("split", f"must be test or valid, got {split!r}")
    with snapshot(source) as snap:
        records = _member_runs(snap, names, with_config)
        long = _metric_values(snap, names, split)
    # Rows: baselines first as declared, then variants by their first position.
    first: dict[str, list] = {}
    for rec in records:
        row, position, exp = rec[1], rec[4], rec[12]
        f = first.get(row)
        if f is None:
            first[row] = [position, exp, rec[3]]
        else:
            f[0], f[1] = min(f[0], position), min(f[1], exp)
    rows = sorted(first, key=lambda r: (first[r][2] != "baseline", first[r][1], first[r][0]))  # stable
    role = {r: first[r][2] for r in rows}
    # Values: a row holds one run per seed (the first listed), a run counts when it is
    # done and has at least one value; a metric counts when some run has a value.
    done = [rec for rec in records if rec[8] == DONE]
    by_run: dict[int, dict[str, float]] = {}
    for rid, name, value in long:
        if value is not None:
            by_run.setdefault(rid, {}).setdefault(name, value)
    metrics = sorted({name for values in by_run.values() for name in values}) if done else []
    pairs, vectors, seen, pair_runs = [], [], set(), []
    for rec in done:
        got = by_run.get(rec[0])
        if got is None or (rec[1], rec[7]) in seen:
            continue
        seen.add((rec[1], rec[7]))
        pairs.append((rec[1], rec[7]))
        pair_runs.append(int(rec[0]))
        vectors.append([got.get(m, math.nan) for m in metrics])
    matrix = np.array(vectors, dtype=float).reshape(len(pairs), len(metrics))
    return ExperimentFrame(names, records, rows, role, metrics, pairs, matrix, pair_runs)


def per_user(source, run_ids: list[int], split: str = "test") -> dict[int, bytes]:
    """The encoded per-user values (``ablate.peruser``) of these runs on ``split``; runs
    that kept none (trained before ablate kept them, or a sampled evaluation) are left out."""
    out: dict[int, bytes] = {}
    if not run_ids:
        return out
    with snapshot(source) as snap:
        if not snap.rows("SELECT 1 FROM per_user LIMIT 1"):  # a store of runs from before they were kept
            return out
        for chunk in _chunks(run_ids):
            params: dict = {"split": split}
            for rid, data in snap.rows(f"SELECT run_id, data FROM per_user WHERE split = :split "
                                       f"AND run_id IN {_in(chunk, 'r', params)}", params):
                out[int(rid)] = bytes(data)
    return out


def _epochs(snap: Snapshot, run_ids: list[int], columns: str) -> list[tuple]:
    """Epoch rows of the given runs ordered by run and epoch (ids in chunks: SQL
    parameter counts are limited)."""
    out: list[tuple] = []
    for chunk in _chunks(run_ids):
        params: dict = {}
        out += snap.rows(f"SELECT {columns} FROM epochs WHERE run_id IN {_in(chunk, 'r', params)} ORDER BY run_id, epoch",
                         params)
    return out


def older_implementations(source, run_ids: list[int] | None) -> dict[int, tuple[str, str]]:
    """``{run_id: (trained by, current)}`` for the given done runs (None: every run) that were
    trained by another implementation than this checkout's (:mod:`ablate.versions`): their
    numbers are not what the code would compute now, and a report must say so."""
    from ablate import versions

    out: dict[int, tuple[str, str]] = {}
    if run_ids is not None and not run_ids:
        return out
    with snapshot(source) as snap:
        if run_ids is None:
            rows = snap.rows(f"SELECT id, model, versions FROM runs WHERE status = '{DONE}' AND versions IS NOT NULL")
        else:
            rows = []
            for chunk in _chunks(sorted(set(run_ids))):
                params: dict = {}
                rows += snap.rows(f"SELECT id, model, versions FROM runs WHERE status = '{DONE}' "
                                  f"AND id IN {_in(chunk, 'r', params)}", params)
    for (rid, model, _), stored in zip(rows, json_values([r[2] for r in rows])):
        if stored is None:
            continue  # never trained: nothing to compare
        if not versions.is_current(stored, model):
            out[int(rid)] = (versions.recorded(stored, model), versions.label(model))
    return out


def epoch_losses(source, run_ids: list[int]) -> pd.DataFrame:
    """Per-epoch loss terms of the given runs: columns run_id, epoch, then one per term
    in the order the model reported them (the first is the main loss)."""
    import pandas as pd

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

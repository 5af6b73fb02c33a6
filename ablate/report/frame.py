"""Read an experiment out of the store into pandas: one row per table row, seeds folded.

Two queries, whatever the size of the experiment: members joined with their runs, then
the metrics of those runs (a join on the membership, not a list of ids, so 10,000 runs
cost the same two round trips). pandas does the grouping; nothing here touches the ORM's
lazy relationships.

A table row is a ``Member.row`` name: runs that differ only by seed share it. Several
experiments can be read together; a row appearing in more than one (a shared baseline)
is one row, its runs counted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import null, select

from ablate.errors import UsageError
from ablate.store import Epoch, Experiment, Member, Metric, Run, Status, Store

DONE = Status.DONE.value


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


def read_connection(store: Store):
    """A connection whose transactions are read-only snapshots (``BEGIN DEFERRED``): a
    report never takes SQLite's write lock, so it neither waits on nor delays a sweep."""
    return store.engine.execution_options(ablate_read_only=True).connect()


def experiment_names(store: Store) -> list[str]:
    """Stored experiment names, most recently updated first."""
    with read_connection(store) as conn:
        return list(conn.scalars(select(Experiment.name).order_by(Experiment.updated_at.desc(), Experiment.id.desc())))


def resolve_targets(store: Store, targets: list[str] | None, overrides: dict | None = None) -> list[str]:
    """Turn command-line targets (spec files or stored experiment names) into stored names.

    With no target, the most recently updated experiment. Unknown names are a one-line
    usage error listing what the store holds.
    """
    from pathlib import Path

    from ablate import plan, spec as spec_mod

    known = experiment_names(store)
    if not targets:
        if not known:
            raise UsageError(f"{store.db} holds no experiments yet (run `ablate run SPEC` first)")
        return [known[0]]
    names = []
    for target in targets:
        p = Path(target)
        if p.suffix in (".yaml", ".yml") or p.is_file():
            spec = spec_mod.load_spec(p)
            name = plan.experiment_name(spec, overrides)
            if name not in known:
                raise UsageError(f"experiment {name!r} (from {target}) is not in {store.db}; run `ablate run {target}` first")
        else:
            name = target
            if name not in known:
                listing = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
                raise UsageError(f"no experiment named {name!r} in {store.db} (known: {listing})")
        names.append(name)
    return names


def _member_runs(store: Store, names: list[str], with_config: bool = False) -> pd.DataFrame:
    config = Run.config if with_config else null()
    point = Member.point if with_config else null()
    q = (
        select(Member.run_id, Member.row, Member.variant, Member.role, Member.position, point.label("point"),
               Experiment.name.label("experiment"), Run.seed, Run.status, Run.model, Run.key, config.label("config"))
        .join(Experiment, Experiment.id == Member.experiment_id)
        .join(Run, Run.id == Member.run_id)
        .where(Experiment.name.in_(names))
    )
    with read_connection(store) as conn:
        rows = [tuple(r) for r in conn.execute(q)]  # plain tuples: pandas probes Row objects slowly
    cols = ["run_id", "row", "variant", "role", "position", "point", "experiment", "seed", "status", "model", "key", "config"]
    df = pd.DataFrame(rows, columns=cols)
    order = {n: i for i, n in enumerate(names)}
    df["exp_order"] = df["experiment"].map(order)
    df = df.sort_values(["exp_order", "position"], kind="stable")
    return df.drop_duplicates(["row", "run_id"]).reset_index(drop=True)


def _metric_values(store: Store, names: list[str], split: str) -> pd.DataFrame:
    members = (
        select(Member.run_id).join(Experiment, Experiment.id == Member.experiment_id)
        .where(Experiment.name.in_(names)).distinct().subquery()
    )
    q = (
        select(Metric.run_id, Metric.name, Metric.value)
        .join(members, members.c.run_id == Metric.run_id)
        .where(Metric.split == split)
    )
    with read_connection(store) as conn:
        rows = [tuple(r) for r in conn.execute(q)]
    return pd.DataFrame(rows, columns=["run_id", "name", "value"])


def load(store: Store, names: list[str], split: str = "test", with_config: bool = False) -> ExperimentFrame:
    """Read the named experiments (in that order) with metrics of ``split``; each run's
    grid point and full config only when asked (plots), as JSON decoding is the costly part."""
    if split not in ("test", "valid"):
        raise UsageError(f"--split must be test or valid, got {split!r}")
    runs = _member_runs(store, names, with_config)
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
    long = _metric_values(store, names, split)
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


def epoch_losses(store: Store, run_ids: list[int]) -> pd.DataFrame:
    """Per-epoch loss terms of the given runs: columns run_id, epoch, then one per term
    in the order the model reported them (the first is the main loss)."""
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "epoch"])
    with read_connection(store) as conn:
        rows = conn.execute(
            select(Epoch.run_id, Epoch.epoch, Epoch.losses, Epoch.valid_score)
            .where(Epoch.run_id.in_(run_ids)).order_by(Epoch.run_id, Epoch.epoch)
        ).all()
    records, terms = [], []
    for rid, ep, losses, valid_score in rows:
        rec = {"run_id": rid, "epoch": ep, "valid_score": valid_score}
        for k, v in (losses or {}).items():
            if k not in terms:
                terms.append(k)
            rec[k] = v
        records.append(rec)
    return pd.DataFrame(records, columns=["run_id", "epoch", "valid_score", *terms])


def loss_history(store: Store, run_ids: list[int]) -> dict[int, list[dict[str, float]]]:
    """Each run's per-epoch loss-term dicts, epoch order kept; the first key is the main loss."""
    out: dict[int, list[dict[str, float]]] = {}
    if not run_ids:
        return out
    with read_connection(store) as conn:
        for rid, losses in conn.execute(
            select(Epoch.run_id, Epoch.losses).where(Epoch.run_id.in_(run_ids)).order_by(Epoch.run_id, Epoch.epoch)
        ):
            if losses:
                out.setdefault(int(rid), []).append(losses)
    return out

"""What runs stored, at full precision: for the tests that say two runs computed the same
numbers. RecBole rounds every metric to ``metric_decimal_place`` (4); the store keeps the
unrounded mean beside it (``metrics.exact``) and each user's values (``per_user``), and
these are what such a test compares."""

from __future__ import annotations

from pathlib import Path

# (split, metric) -> (the unrounded mean, that metric's per-user values: the user ids
# then the float32 values, as bytes). Two equal dicts are equal bit for bit, user by user.
FullMetrics = dict[tuple[str, str], tuple[float, bytes]]


def full_metrics(db: str | Path, *, by: str = "key", done: bool = True) -> dict:
    """Each run's :data:`FullMetrics`, by run ``key`` (to compare two stores) or ``id``
    (two runs of one store); only runs that ended ``done`` unless ``done=False``. Fails
    on a metric stored without its unrounded mean or per-user values: a comparison of
    what was not kept would pass for nothing."""
    from ablate.peruser import decode
    from ablate.store import Store

    store = Store(str(db), create=False)
    try:
        out = {}
        for run in store.runs():
            if done and run.status != "done":
                continue
            per_user = {split: decode(data) for split in ("valid", "test")
                        for data in store.per_user([run.id], split).values()}
            metrics: FullMetrics = {}
            for m in run.metrics:
                values = per_user.get(m.split)
                assert m.exact is not None and values is not None, f"run {run.id} kept no full-precision {m.split} {m.name}"
                metrics[(m.split, m.name)] = (m.exact, values.users.tobytes() + values.column(m.name).tobytes())
            out[run.key if by == "key" else run.id] = metrics
        return out
    finally:
        store.engine.dispose()

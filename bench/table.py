"""Time ``ablate table`` over a store of 10,000 runs (target: under one second).

Rows are inserted in bulk with SQLAlchemy core (5,000 rows x 2 seeds, 6 test metrics and
2 epochs of loss terms each), then the table is rendered the way the CLI does it: two
queries for members+runs and metrics, one for the variants' loss terms, pandas pivot.

    python bench/table.py [--runs 10000] [--db /tmp/bench_table.db]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from ablate.store import Epoch, Experiment, Member, Metric, Run, Store

METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]


def fill(db: str, n_runs: int, seeds: int = 2) -> None:
    store = Store(db)
    rng = random.Random(0)
    runs, members, metrics, epochs = [], [], [], []
    for i in range(n_runs):
        rid, row = i + 1, i // seeds
        role = "baseline" if row == 0 else "variant"
        runs.append(dict(id=rid, key=f"{rid:016x}", name=f"row{row}", model="LightGCN", dataset="ml-1m", seed=i % seeds,
                         config={"model": "LightGCN", "k2": row % 50, "seed": i % seeds}, status="done", attempts=1))
        members.append(dict(experiment_id=1, run_id=rid, row=f"row{row}", variant=f"v{row}", role=role, position=i,
                            point={"k2": row % 50}))
        for m in METRICS:
            metrics.append(dict(run_id=rid, split="test", name=m, value=rng.uniform(0.1, 0.3)))
        for e in range(2):
            epochs.append(dict(run_id=rid, epoch=e, losses={"bpr": 0.5, "ot": rng.uniform(0, 0.01)}))
    with store.engine.begin() as conn:
        conn.execute(insert(Experiment), [dict(id=1, name="bench")])
        conn.execute(insert(Run), runs)
        conn.execute(insert(Member), members)
        conn.execute(insert(Metric), metrics)
        conn.execute(insert(Epoch), epochs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp()) / "bench_table.db")
    Path(db).unlink(missing_ok=True)
    t0 = time.perf_counter()
    fill(db, args.runs)
    t1 = time.perf_counter()
    t_imp = time.perf_counter()
    import scipy.stats  # noqa: F401 - a one-off import cost (~1 s), reported apart from the render

    from ablate.cli.table import render_table
    from ablate.report import plot, table  # noqa: F401

    print(f"(imports: {time.perf_counter() - t_imp:.2f} s)")
    for fmt in ("md", "latex", "csv", "rich"):
        t2 = time.perf_counter()
        table, text = render_table(db, ["bench"], fmt=fmt)
        if fmt == "rich":
            from ablate.report.table import render

            text = render(table, "rich")
        t3 = time.perf_counter()
        print(f"{fmt:5s}: {len(table.rows)} rows from {args.runs} runs in {t3 - t2:.3f} s ({len(text)} chars)")
    print(f"(bulk insert of {args.runs} runs: {t1 - t0:.2f} s)")


if __name__ == "__main__":
    main()

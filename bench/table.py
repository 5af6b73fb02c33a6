"""Time ``ablate table`` over a store of 10,000 runs (target: under one second, as a user
measures it: the whole command, interpreter start and imports included).

Rows are inserted in bulk with SQLAlchemy core (5,000 rows x 2 seeds, with a baseline
row, 6 test metrics and 2 epochs of loss terms each). Then:

* end to end: ``python -m ablate table bench --md --db DB`` in a fresh process, several
  times (min and median), for Markdown, LaTeX and CSV, next to a bare ``python -c pass``;
* in process: the table rendered the way the CLI does it (one read-only snapshot, two
  queries for members+runs and metrics, one for the variants' loss terms), per format.

    python bench/table.py [--runs 10000] [--repeat 5] [--db /tmp/bench_table.db]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's ablate, also for the processes started below
METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]


def fill(db: str, n_runs: int, seeds: int = 2) -> None:
    from sqlalchemy import insert

    from ablate.store import Epoch, Experiment, Member, Metric, Run, Store

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
    store.engine.dispose()  # last connection closed: the WAL is folded into the file, as after a sweep


def wall(cmd: list[str], repeat: int) -> list[float]:
    """Wall seconds of ``cmd`` in a fresh process, ``repeat`` times (output discarded)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        out.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5, help="end-to-end runs per format (min and median are printed)")
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    db = args.db or str(Path(tempfile.mkdtemp()) / "bench_table.db")
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)
    t0 = time.perf_counter()
    fill(db, args.runs)
    print(f"(bulk insert of {args.runs} runs: {time.perf_counter() - t0:.2f} s)")

    # End to end, the way a user times it: `time ablate table bench --md > /dev/null`.
    bare = wall([sys.executable, "-c", "pass"], args.repeat)
    print(f"end to end, fresh process each, {args.repeat} times (min / median):")
    print(f"  python -c pass         : {min(bare):.3f} s / {statistics.median(bare):.3f} s")
    for fmt in ("md", "latex", "csv"):
        t = wall([sys.executable, "-m", "ablate", "table", "bench", f"--{fmt}", "--db", db], args.repeat)
        print(f"  ablate table --{fmt:5s}  : {min(t):.3f} s / {statistics.median(t):.3f} s")

    # In process: imports once, then each format (a first call pays lazy imports: pandas
    # for csv, rich for rich).
    t_imp = time.perf_counter()
    from ablate import api
    from ablate.report.table import render

    print(f"in process (imports of ablate.api: {time.perf_counter() - t_imp:.2f} s):")
    for fmt in ("md", "latex", "csv", "rich"):
        t2 = time.perf_counter()
        table = api.comparison(["bench"], db=db)
        text = render(table, fmt)
        t3 = time.perf_counter()
        print(f"  {fmt:5s}: {len(table.rows)} rows from {args.runs} runs in {t3 - t2:.3f} s ({len(text)} chars)")


if __name__ == "__main__":
    main()

"""One trial budget three ways on ml-100k: ``ablate search`` with TPE and median pruning,
``ablate search`` with random sampling and no pruning, and ``ablate run`` over the grid the
notebook used (ot_weight 1e-6, 1e-7, 1e-8 x proto_weight 8e-8, 8e-9, 8e-10: 9 runs).
Prints, side by side, the best valid score each reached, that run's test score, how many
trials were pruned, and the wall time.

    python bench/search.py                       # LightGCNOT, 9 trials, 2 epochs, --jobs 2
    python bench/search.py --epochs 5 --trials 9

The tuned row is experiments/search.yaml's ``proto`` on ml-100k, with its prototype term on
from the first epoch (``proto_warmup: 0``) so both weights matter in a short run; the two
searches draw from that spec's space (ot_weight 1e-8..1e-5, proto_weight 1e-9..1e-6, log
scale). Each way gets a fresh store, so nothing is answered from another's runs. Not run
by the tests.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_GRID = {"ot_weight": [1.0e-6, 1.0e-7, 1.0e-8], "proto_weight": [8.0e-8, 8.0e-9, 8.0e-10]}


def write_spec(folder: Path, epochs: int, trials: int, sampler: str, pruner: str, grid: bool) -> Path:
    spec = yaml.safe_load((ROOT / "experiments" / "search.yaml").read_text())
    spec["name"] = f"bench_{sampler}_{pruner}" if not grid else "bench_grid"
    spec["base"].update(dataset="ml-100k", epochs=epochs, eval_batch_size=409600)
    spec["baselines"] = {}
    spec["variants"]["proto"]["params"]["proto_warmup"] = 0
    block = spec["search"]
    block.update(trials=trials)
    block["sampler"]["kind"] = sampler
    block["sampler"]["startup_trials"] = min(block["sampler"].get("startup_trials", 10), max(1, trials // 3))
    block["pruner"].update(kind=pruner, warmup_epochs=0, startup_trials=min(3, trials))
    if grid:
        spec["grid"] = NOTEBOOK_GRID
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def best_of(db: Path, metric: str = "ndcg@10") -> tuple[float | None, float | None, int, int]:
    """(best valid, its test, runs, pruned) over every run of a store."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT r.id, r.status, v.value, t.value FROM runs r "
            "LEFT JOIN metrics v ON v.run_id = r.id AND v.split = 'valid' AND v.name = ? "
            "LEFT JOIN metrics t ON t.run_id = r.id AND t.split = 'test' AND t.name = ?", (metric, metric)).fetchall()
    finally:
        con.close()
    done = [r for r in rows if r[1] == "done" and r[2] is not None]
    top = max(done, key=lambda r: r[2], default=None)
    return (top[2] if top else None, top[3] if top else None, len(rows), sum(r[1] == "pruned" for r in rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=9, help="the budget (default: the notebook grid's 9 runs)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-search-"))
    ways = [("TPE + median pruning", "search", "tpe", "median"), ("random, no pruning", "search", "random", "none"),
            ("notebook grid (ablate run)", "run", "tpe", "none")]
    results = []
    try:
        for label, command, sampler, pruner in ways:
            grid = command == "run"
            spec = write_spec(tmp, args.epochs, args.trials, sampler, pruner, grid)
            db = tmp / f"{spec.stem}.db"
            cmd = [sys.executable, "-m", "ablate", command, str(spec), "--db", str(db), "--jobs", str(args.jobs)]
            t0 = time.monotonic()
            out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if out.returncode != 0:
                print(f"{label}: exit {out.returncode}\n{out.stdout[-2000:]}{out.stderr[-2000:]}", file=sys.stderr)
                return 1
            valid, test, runs, pruned = best_of(db)
            results.append((label, runs, pruned, valid, test, wall))
            print(f"  {label}: {runs} runs in {wall:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nLightGCNOT on ml-100k, {args.epochs} epochs, {args.trials} trials, --jobs {args.jobs}")
    print(f"{'way':<28} {'runs':>4} {'pruned':>6} {'best valid ndcg@10':>18} {'its test ndcg@10':>16} {'wall s':>7}")
    for label, runs, pruned, valid, test, wall in results:
        v = f"{valid:.4f}" if valid is not None else "-"
        t = f"{test:.4f}" if test is not None else "-"
        print(f"{label:<28} {runs:>4} {pruned:>6} {v:>18} {t:>16} {wall:>7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

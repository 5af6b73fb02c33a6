"""One run, two ways: a fresh ``tests/oracles/bare_recbole.py`` process vs ``ablate run`` of a
one-run spec on a fresh database (coordinator, spawned worker, SQLite writes and all).
Prints ablate's overhead in percent of the bare script's wall time (target <= 5%) and
checks the metrics are identical (RecBole's values and the unrounded means behind them).

    python bench/overhead.py --repeat 3      # alternating; min of each is compared

Both use all cores for the one run (``--jobs 1``), as the bare script does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import _out  # noqa: E402
from tests.oracles import recbole_runs as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-overhead-"))
    spec = c.write_spec(tmp, name="overhead", epochs=args.epochs, grid={"n_layers": [2]})
    (run,) = c.planned(spec)
    bare_t, abl_t, problems = [], [], []
    print(f"overhead: 1 LightGCN run on ml-100k, {args.epochs} epochs, {args.repeat} repeat(s), folder {tmp}", flush=True)
    print(f"  ablate is started as: {' '.join(c.ablate_command())}", flush=True)
    for rep in range(args.repeat):
        res = c.bare_run(run.model, run.config, tmp / f"bare{rep}")
        bare_t.append(res["wall"])
        db = tmp / f"ablate{rep}" / "results.db"
        db.parent.mkdir()
        abl_t.append(c.ablate_run(spec, db, "--cpu", "--jobs", "1"))
        problems += c.compare({run.key: res}, c.stored_metrics(db))
        print(f"  [{rep}] bare {bare_t[-1]:6.2f} s (imports {res['seconds']['imports']:.2f}, prepare "
              f"{res['seconds']['prepare']:.2f}, fit+eval {res['seconds']['fit_eval']:.2f})   ablate run {abl_t[-1]:6.2f} s", flush=True)
    b, a = min(bare_t), min(abl_t)
    overhead = 100 * (a - b) / b
    print(f"\nbare script {b:.2f} s, ablate run {a:.2f} s (min of {args.repeat}): overhead {overhead:+.1f}%")
    print("metrics: " + ("identical" if not problems else "DIFFER: " + "; ".join(problems)))
    print(f"written {_out.write_json('overhead.json', {'bare_s': bare_t, 'ablate_s': abl_t, 'overhead_pct': overhead, 'metric_problems': problems})}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The same ml-100k LightGCN sweep two ways, in one invocation: (a) a sequential loop of
fresh ``tests/oracles/bare_recbole.py`` processes (what a researcher does today with one
``run_recbole`` per config), (b) ``ablate run`` on a fresh database. Prints both wall
times and their ratio, and checks that both give the same metrics, run for run: RecBole's
values and the unrounded means behind them, bit for bit (``tests/oracles/recbole_runs.compare``).

    python bench/sweep.py                      # 12 runs, 2 epochs, ablate --jobs 2
    python bench/sweep.py --jobs 1,2 --repeat 2  # also compare 1 job x 2 threads
    python bench/sweep.py --runs 4 --epochs 1  # quick smoke

The machine may be shared: with ``--repeat`` the two ways alternate and the minimum of
each is reported (noise only ever adds time). Exit code 1 if the metrics differ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import _out  # noqa: E402
from tests.oracles import recbole_runs as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--jobs", default=None, help="ablate --jobs values to time, comma-separated (default: ablate's own default)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--bare-threads", type=int, default=None, help="torch threads in each bare run (default: torch's, all cores)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-sweep-"))
    spec = c.write_spec(tmp, epochs=args.epochs, runs=args.runs)
    runs = c.planned(spec)
    jobs_list = [j.strip() for j in args.jobs.split(",")] if args.jobs else [""]
    print(f"sweep: {len(runs)} LightGCN runs on ml-100k, {args.epochs} epochs; {os.cpu_count()} cores; folder {tmp}", flush=True)

    seq_times: list[float] = []
    abl_times: dict[str, list[float]] = {j: [] for j in jobs_list}
    bare: dict[str, dict] = {}
    problems: list[str] = []
    for rep in range(args.repeat):
        t = time.perf_counter()
        for i, r in enumerate(runs, 1):
            res = c.bare_run(r.model, r.config, tmp / f"bare{rep}", threads=args.bare_threads)
            bare[r.key] = res
            print(f"  [seq {rep}] {i:2d}/{len(runs)} {r.name:40s} {res['wall']:6.1f} s  test {res['test']}", flush=True)
        seq_times.append(time.perf_counter() - t)
        print(f"[seq {rep}] sequential loop of fresh processes: {seq_times[-1]:.1f} s", flush=True)
        for j in jobs_list:
            db = tmp / f"ablate{rep}-j{j or 'default'}" / "results.db"
            db.parent.mkdir(parents=True)
            wall = c.ablate_run(spec, db, "--cpu", *(["--jobs", j] if j else []))
            abl_times[j].append(wall)
            diff = c.compare(bare, c.stored_metrics(db))
            problems += [f"[ablate {rep} jobs={j or 'default'}] {p}" for p in diff]
            print(f"[ablate {rep}] ablate run --jobs {j or '(default)'}: {wall:.1f} s, "
                  f"metrics {'identical' if not diff else f'DIFFER in {len(diff)} place(s)'}", flush=True)

    seq = min(seq_times)
    print("\n== result (min over repeats) ==")
    print(f"sequential fresh processes : {seq:7.1f} s   ({seq / len(runs):.1f} s/run)")
    summary = {"runs": len(runs), "epochs": args.epochs, "cores": os.cpu_count(), "sequential_s": seq_times, "ablate_s": abl_times}
    for j, ts in abl_times.items():
        best = min(ts)
        print(f"ablate run --jobs {j or 'default':7s} : {best:7.1f} s   ratio {best / seq:.2f}x  "
              f"(per-repeat ratios {', '.join(f'{a / s:.2f}' for a, s in zip(ts, seq_times))})")
        summary[f"ratio_jobs_{j or 'default'}"] = best / seq
    print("metrics: " + ("identical in every run (valid and test, unrounded)" if not problems else "DIFFER"))
    for p in problems[:20]:
        print("  " + p)
    summary["metric_problems"] = problems
    print(f"written {_out.write_json('sweep.json', summary)}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

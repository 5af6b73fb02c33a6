"""The same sweep of one graph backbone two ways, in one invocation: (a) ``ablate run
--fuse off`` (each run trains alone, one after another on one slot: today's ``ablate run``),
(b) ``ablate run --fuse N`` (the runs side by side in one worker, one wide propagation per
layer). Prints both wall times, the throughput ratio, and whether every stored metric of
every run is equal.

    python bench/fused.py                                   # 8 ml-100k LightGCN runs, 2 epochs
    python bench/fused.py --dataset ml-1m --runs 4 --epochs 1
    python bench/fused.py --model SimGCL --runs 4           # any fusible model
    python bench/fused.py --device cuda --dataset ml-1m --runs 4   # on a GPU (--gpus 0)

The runs differ in learning rate (and so in every number they produce) and share the
data settings, embedding size and depth. ``--repeat`` alternates the two ways and keeps
the minimum of each (noise on a shared machine only ever adds time). Exit code 1 if a
metric differs. RecBole's LightGCN gathers rows with ``x[index]``, whose backward on a
CPU with several threads is not bit-repeatable even run alone; its differences, if any,
are printed as the largest one (ablate's models repeat bit for bit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.oracles import recbole_runs as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-path", default=None, help="folder holding DATASET/ (default: ml-100k from the recbole wheel, "
                                                        "ml-1m from $ABLATE_DATA or ../shared/data)")
    ap.add_argument("--model", default="LightGCN")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--embedding-size", type=int, default=64)
    ap.add_argument("--fuse", default=None, help="group size for the fused way (default: --runs)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    data_path = args.data_path
    extra = {"embedding_size": args.embedding_size, "eval_batch_size": 4096000, "topk": [10, 20]}
    if args.dataset != "ml-100k":
        data_path = data_path or os.environ.get("ABLATE_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
        extra["load_col"] = {"inter": ["user_id", "item_id"]}
    rates = [round(0.001 * (1 + i / 4), 6) for i in range(args.runs)]
    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-fused-"))
    spec = c.write_spec(tmp, name="bench-fused", dataset=args.dataset, data_path=data_path, epochs=args.epochs,
                        grid={"learning_rate": rates}, extra=extra)
    text = spec.read_text().replace("model: LightGCN", f"model: {args.model}")
    spec.write_text(text)
    where = ["--gpus", "0"] if args.device == "cuda" else ["--cpu"]
    fuse = args.fuse or str(args.runs)
    print(f"fused: {args.runs} {args.model} runs on {args.dataset}, {args.epochs} epoch(s), embedding "
          f"{args.embedding_size}, device {args.device}; {os.cpu_count()} cores; folder {tmp}", flush=True)

    times: dict[str, list[float]] = {"solo": [], "fused": []}
    stored: dict[str, dict] = {}
    for rep in range(args.repeat):
        for way, flags in (("solo", ["--fuse", "off"]), ("fused", ["--fuse", fuse])):
            db = tmp / f"{way}{rep}" / "results.db"
            db.parent.mkdir(parents=True)
            wall = c.ablate_run(spec, db, *where, "--jobs", "1", *flags) if args.device == "cpu" else \
                c.ablate_run(spec, db, *where, *flags)
            times[way].append(wall)
            stored[way] = c.stored_metrics(db)
            print(f"[{rep}] {way:5s} ({' '.join(flags)}): {wall:7.1f} s", flush=True)

    problems, worst = [], 0.0
    solo, fused = stored["solo"], stored["fused"]
    for key, a in solo.items():
        b = fused.get(key)
        if b is None or a["status"] != "done" or b["status"] != "done":
            problems.append(f"{key}: {a['status']} alone, {b and b['status']} fused")
            continue
        for split in ("valid", "test"):
            for name, value in a[split].items():
                worst = max(worst, abs(value - b[split].get(name, float("nan"))))
    best_solo, best_fused = min(times["solo"]), min(times["fused"])
    print(f"solo  : {best_solo:7.1f} s  ({args.runs / best_solo * 60:.2f} runs/min)")
    print(f"fused : {best_fused:7.1f} s  ({args.runs / best_fused * 60:.2f} runs/min)")
    print(f"throughput ratio fused/solo: {best_solo / best_fused:.2f}x (wall times include start-up and data loading)")
    if problems:
        print("NOT all done:\n  " + "\n  ".join(problems))
        return 1
    print("metrics: " + ("every metric of every run equal exactly" if worst == 0 else f"largest difference {worst:.3g}"))
    return 0 if worst == 0 or args.model == "LightGCN" else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(code)

"""Time the per-user significance of ``ablate table`` on the notebook's shape: 61 rows
(the baseline and 60 variants) x 6 columns (recall/ndcg @ 10, 20, 50) x 6,040 users
(ml-1m), one seed.

The per-user values are synthetic but shaped like RecBole's on ml-1m: each user has
2-200 held-out items (about a tenth of their ratings), each row ranks 50 items whose
relevance bits are drawn per user (most users get few hits, so most recall@10 values
are 0), and recall@k / ndcg@k are computed from those bits with RecBole's formulas
(ideal DCG over min(|positives|, k)). Variants share most of the baseline's draws
(paired, as two models on one split are) and move the hit rate by -5 % to +3 %.

Each timing runs in a fresh process (``python -c``), imports included, since that is
what a user waits for: per-user t-tests + Holm over the 366 cells (360 tested; the goal
is under 1 s), Wilcoxon + Holm, the randomization test with 10,000 sign flips (goal:
under 5 s), the bootstrap interval of the relative Δ for every cell, and the pairing of
the rows' stored records with the baseline's. Then the size and time of one run's
encoded per-user record.

Last, end to end as a user waits for it: a store of that shape (61 done runs with their
per-user records and unrounded means) and ``python -m ablate table bench --md`` in a fresh
process, with the per-user t-test (the default) and with the randomization test.

    python bench/significance.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROWS, USERS, TOPK = 61, 6_040, (10, 20, 50)
COLUMNS = [f"{m}@{k}" for k in TOPK for m in ("recall", "ndcg")]


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(users, values rows x users x columns float32) shaped like ml-1m's per-user metrics."""
    rng = np.random.default_rng(seed)
    pos_len = np.clip(np.round(rng.lognormal(2.4, 0.9, USERS)), 2, 200).astype(int)
    ability = rng.beta(0.6, 4.0, USERS)  # how well any model does for this user
    decay = 1.0 / np.log2(np.arange(2, 52))  # relevant items concentrate near the top
    base_u = rng.random((USERS, 50))
    effect = np.concatenate([[0.0], rng.uniform(-0.05, 0.03, ROWS - 1)])
    rank = np.arange(1, 51)
    idcg = np.cumsum(1.0 / np.log2(rank + 1))
    values = np.empty((ROWS, USERS, len(COLUMNS)), dtype=np.float32)
    for r in range(ROWS):
        own = np.where(rng.random((USERS, 50)) < 0.3, rng.random((USERS, 50)), base_u)  # 70 % shared draws
        q = np.clip(ability[:, None] * decay[None, :] * 1.6 * (1 + effect[r]), 0, 1)
        bits = own < q
        # at most |positives| hits in total
        bits &= np.cumsum(bits, axis=1) <= pos_len[:, None]
        hits = np.cumsum(bits, axis=1)
        dcg = np.cumsum(bits / np.log2(rank + 1), axis=1)
        for c, k in enumerate(TOPK):
            values[r, :, 2 * c] = hits[:, k - 1] / pos_len
            ideal = idcg[np.minimum(pos_len, k) - 1]
            values[r, :, 2 * c + 1] = dcg[:, k - 1] / ideal
    users = rng.permutation(USERS).astype(np.int32) + 1  # RecBole's ids, in some evaluation order
    return users, values


CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {root!r})
from ablate import peruser
from ablate.report import significance as sg
t_import = time.perf_counter() - t0
data = np.load({path!r})
users, values = data["users"], data["values"]
cols = [str(c) for c in data["columns"]]
t1 = time.perf_counter()
runs = [{{2020: peruser.PerUser(users, cols, values[r])}} for r in range(len(values))]
by_row = [peruser.pair_columns(runs[r], runs[0], cols) for r in range(len(runs))]
stacked = [peruser.stack([p[c] for p in by_row]) for c in cols]
a = np.stack([s[1] for s in stacked])  # columns x rows x users
b = np.stack([s[2] for s in stacked])
t_pair = time.perf_counter() - t1
t2 = time.perf_counter()
what = {what!r}
if what == "ci":
    out = sg.bootstrap_ci(a, b[:, :1, :], n_resamples={resamples})
    tested = int(np.isfinite(out.low).sum())
else:
    out = sg.compare(a - b, test=what, correction="holm", n_resamples={resamples})
    tested = out.family
t_work = time.perf_counter() - t2
print(json.dumps(dict(imports=t_import, pair=t_pair, work=t_work, total=time.perf_counter() - t0, tested=tested,
                      scipy=[m for m in ("scipy.special", "scipy.stats") if m in sys.modules])))
"""


def child(path: Path, what: str, resamples: int, repeat: int) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), what=what, resamples=resamples)
    runs = []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res["wall"] = wall
        res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        runs.append(res)
    return {k: (statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k]) for k in runs[0]}


def fill_store(db: str, users: np.ndarray, values: np.ndarray) -> None:
    """A store of the notebook's shape: row0 (the baseline) and 60 variants, one seed,
    each run done with its test metrics (rounded and unrounded) and per-user record."""
    from sqlalchemy import insert

    from ablate import peruser
    from ablate.store import Experiment, Member, Metric, Run, Store, UserValues

    store = Store(db)
    runs, members, metrics, blobs = [], [], [], []
    for r in range(len(values)):
        rid = r + 1
        runs.append(dict(id=rid, key=f"{rid:016x}", name=f"row{r}", model="LightGCN", dataset="ml-1m", seed=2020,
                         config={"model": "LightGCN", "row": r}, status="done", attempts=1))
        members.append(dict(experiment_id=1, run_id=rid, row=f"row{r}", variant=f"row{r}",
                            role="baseline" if r == 0 else "variant", position=r, point={}))
        record = peruser.PerUser(users, COLUMNS, values[r])
        for name, mean in record.means().items():
            metrics.append(dict(run_id=rid, split="test", name=name, value=round(mean, 4), exact=mean))
        blobs.append(dict(run_id=rid, split="test", data=peruser.encode(record)))
    with store.engine.begin() as conn:
        conn.execute(insert(Experiment), [dict(id=1, name="bench")])
        conn.execute(insert(Run), runs)
        conn.execute(insert(Member), members)
        conn.execute(insert(Metric), metrics)
        conn.execute(insert(UserValues), blobs)
    store.engine.dispose()


def end_to_end(users: np.ndarray, values: np.ndarray, repeat: int) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        fill_store(db, users, values)
        print(f"\nend to end: `ablate table bench --md` over a store of {ROWS} runs x {USERS:,} users "
              f"(fresh process each, min / median of {repeat}):")
        for label, flags in (("no test (--test seeds, 1 seed)", ["--test", "seeds"]),
                             ("per-user t-test + Holm (default)", []),
                             ("randomization 10,000 + Holm", ["--test", "randomization"]),
                             ("t-test + Holm, --ties --ci", ["--ties", "--ci"])):
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                p = subprocess.run([sys.executable, "-m", "ablate", "table", "bench", "--md", "--db", db, *flags],
                                   capture_output=True, text=True, env=env)
                times.append(time.perf_counter() - t)
                if p.returncode != 0:
                    raise RuntimeError(p.stderr[-2000:])
            marked = sum(line.count("\\*") for line in p.stdout.splitlines() if line.startswith("| row"))
            print(f"  {label:34s} {min(times):6.2f} s / {statistics.median(times):6.2f} s  ({marked} '*' printed)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (medians are printed)")
    args = ap.parse_args()
    t = time.perf_counter()
    users, values = synthetic()
    print(f"synthetic per-user values: {ROWS} rows x {USERS:,} users x {len(COLUMNS)} columns in {time.perf_counter() - t:.1f} s")
    zero = (values == 0).mean(axis=(0, 1))
    print("  share of users at 0: " + ", ".join(f"{c} {z:.0%}" for c, z in zip(COLUMNS, zero)))
    print("  baseline means: " + ", ".join(f"{c} {m:.4f}" for c, m in zip(COLUMNS, values[0].mean(axis=0))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.npz"
        np.savez(path, users=users, values=values, columns=np.array(COLUMNS))
        bare = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import numpy"], check=True)
            bare.append(time.perf_counter() - t)
        print(f"\nfresh process each, median of {args.repeat}; 'in process' = from the first import to the answer, "
              f"data loading and pairing excluded (python -c 'import numpy': {statistics.median(bare):.2f} s wall); "
              f"'cpu' = the whole process's user + system seconds (load average now {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores)")
        print(f"{'':34s} {'imports':>8s} {'pair':>6s} {'test':>6s} {'in process':>11s} {'wall':>6s} {'cpu':>6s}  scipy loaded")
        for label, what, resamples in (("user-t + Holm", "user-t", 0), ("wilcoxon + Holm", "wilcoxon", 0),
                                       ("randomization 10,000 + Holm", "randomization", 10_000),
                                       ("bootstrap CI, 10,000 resamples", "ci", 10_000),
                                       ("bootstrap CI, 2,000 resamples", "ci", 2_000)):
            r = child(path, what, resamples or 10_000, args.repeat)
            print(f"  {label:32s} {r['imports']:7.2f}s {r['pair']:5.2f}s {r['work']:5.2f}s {r['imports'] + r['work']:10.2f}s "
                  f"{r['wall']:5.2f}s {r['cpu']:5.2f}s  {', '.join(r['scipy']) or '-'}  ({r['tested']} cells)")

    from ablate import peruser

    one = peruser.PerUser(users, COLUMNS, values[0])
    raw = one.users.nbytes + one.values.nbytes
    t = time.perf_counter()
    for _ in range(20):
        blob = peruser.encode(one)
    t_enc = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    for _ in range(20):
        back = peruser.decode(blob)
    t_dec = (time.perf_counter() - t) / 20
    assert back.equals(one)
    sizes = [len(peruser.encode(peruser.PerUser(users, COLUMNS, values[r]))) for r in range(ROWS)]
    print(f"\none run's per-user record ({USERS:,} users x {len(COLUMNS)} columns): {raw:,} bytes raw, "
          f"{len(blob):,} encoded ({len(blob) / raw:.0%}); encode {t_enc * 1e3:.1f} ms, decode {t_dec * 1e3:.1f} ms")
    print(f"  all {ROWS} rows: {sum(sizes) / 1e6:.2f} MB encoded (min {min(sizes):,}, max {max(sizes):,} bytes a run)")
    end_to_end(users, values, args.repeat)


if __name__ == "__main__":
    main()

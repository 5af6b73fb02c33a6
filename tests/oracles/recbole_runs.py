"""One sweep two ways, and the comparison: a spec, fresh processes of
``bare_recbole.py`` (what a researcher runs today, one ``run_recbole`` per config),
``ablate run`` on a fresh store, and the metrics each stored.

Both ways get the same resolved configs (``ablate.plan.expand``), so a difference in
metrics is a difference in execution, not in configuration. The reference test
(``tests/models/test_reference_recbole.py``) asserts they are equal; the benchmarks in
``bench/`` time the two ways with the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BARE = Path(__file__).resolve().with_name("bare_recbole.py")


def write_spec(folder: Path, *, name: str = "bench", dataset: str = "ml-100k", data_path: str | None = None,
               epochs: int = 2, grid: dict | None = None, runs: int | None = None, extra: dict | None = None) -> Path:
    """A LightGCN grid spec; ``runs`` keeps the first N grid values' product small."""
    grid = grid or {"n_layers": [1, 2, 3], "learning_rate": [0.001, 0.002], "reg_weight": [1e-5, 1e-4]}
    if runs is not None:  # trim the grid to N runs by truncating the last axis first
        grid = _trim(grid, runs)
    base = {
        "dataset": dataset, "epochs": epochs, "train_batch_size": 4096, "embedding_size": 16,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
        "metric_decimal_place": 12,  # RecBole's values to 12 places; compare() also checks the unrounded means
    }
    if data_path:
        base["data_path"] = data_path
    base.update(extra or {})
    spec = {"name": name, "base": base, "seeds": [2020],
            "variants": {"lightgcn": {"model": "LightGCN", "grid": grid}}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _trim(grid: dict, runs: int) -> dict:
    import math

    grid = {k: list(v) for k, v in grid.items()}
    for k in reversed(list(grid)):
        while math.prod(len(v) for v in grid.values()) > runs and len(grid[k]) > 1:
            grid[k].pop()
    return grid


def planned(spec_path: Path) -> list:
    from ablate import plan, spec

    return plan.expand(spec.load_spec(spec_path))


def bare_run(model: str, config: dict, cwd: Path, threads: int | None = None, gpu: str | None = None) -> dict:
    """One fresh ``python bare_recbole.py`` process; returns its result line + wall."""
    cfg = dict(config, show_progress=False, use_gpu=gpu is not None, gpu_id="" if gpu is None else gpu)
    cmd = [sys.executable, str(BARE), model, json.dumps(cfg)] + (["--threads", str(threads)] if threads else [])
    cwd.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"bare run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def ablate_command() -> list[str]:
    """``ablate`` as a user starts it: the console script installed next to this
    interpreter (multiprocessing's spawn re-runs that script in every worker, so what it
    imports is part of the measure), else ``python -m ablate``."""
    script = Path(sys.executable).with_name("ablate")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ablate"]


def ablate_run(spec_path: Path, db: Path, *args: str) -> float:
    """``ablate run SPEC --db DB ARGS`` in a fresh process; returns the wall time."""
    cmd = [*ablate_command(), "run", str(spec_path), "--db", str(db), *args]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=db.parent, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"ablate run failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return wall


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def stored_metrics(db: Path) -> dict[str, dict]:
    """run key -> {"valid": {...}, "test": {...}, "exact": {"valid": {...}, "test": {...}},
    "status", "model", "peak_mem_mb", "wall_seconds"}: RecBole's rounded metrics and the
    unrounded means ablate kept beside them."""
    from ablate.store import Store

    out = {}
    for r in Store(str(db), create=False).runs():
        m: dict = {"valid": {}, "test": {}, "exact": {"valid": {}, "test": {}}}
        for x in r.metrics:
            m[x.split][x.name] = x.value
            m["exact"][x.split][x.name] = x.exact
        m.update(status=str(getattr(r.status, "value", r.status)), model=r.model, peak_mem_mb=r.peak_mem_mb,
                 wall_seconds=r.wall_seconds)
        out[r.key] = m
    return out


def compare(bare: dict[str, dict], stored: dict[str, dict]) -> list[str]:
    """Differences between the bare loop's metrics and ablate's, per run key (empty: same):
    RecBole's rounded values, and the unrounded means, which must be equal bit for bit."""
    problems = []
    for key, b in bare.items():
        a = stored.get(key)
        if a is None:
            problems.append(f"{key}: missing from ablate's store")
            continue
        if a["status"] != "done":
            problems.append(f"{key}: ablate status {a['status']}")
        for split in ("valid", "test"):
            if b[split] != a[split]:
                problems.append(f"{key} {split}: bare {b[split]} != ablate {a[split]}")
            full_b, full_a = b["exact"][split], a["exact"][split]
            if not full_b or full_b != full_a:
                worst = max((abs(v - full_a[k]) for k, v in (full_b or {}).items() if full_a.get(k) is not None),
                            default=float("nan"))
                problems.append(f"{key} {split} unrounded: bare {full_b} != ablate {full_a} (max |diff| {worst:.3g})")
    return problems

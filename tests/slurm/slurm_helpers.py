"""Helpers of the Slurm executor tests: the spec, CLI calls, event files, processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from ablate.cli import app

# Two LightGCN runs (1 and 2 layers): a baseline and one variant, 1 epoch each.
SPEC = """\
name: slurmtiny
base:
  dataset: ml-100k
  epochs: 1
  embedding_size: 8
  train_batch_size: 4096
  eval_batch_size: 409600
  topk: [10]
  metrics: [Recall, NDCG]
  valid_metric: NDCG@10
seeds: [2020]
baselines:
  LightGCN: {model: LightGCN, params: {n_layers: 1}}
variants:
  deeper:
    model: LightGCN
    params: {n_layers: 2}
"""

SLURM_ARGS = ["--executor", "slurm", "--gpus-per-job", "0", "--array-parallelism", "2", "--time", "0:10:00"]


def cli(*args: str, code: int | None = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def metrics_by_key(db: Path) -> dict[str, dict[tuple[str, str], float]]:
    from ablate.store import Store

    return {r.key: {(m.split, m.name): m.value for m in r.metrics} for r in Store(str(db)).runs() if r.status == "done"}


def wait_for_event(folder: Path, run_id: int, kind: str, timeout: float = 120.0) -> dict:
    """The first ``kind`` event a job wrote for ``run_id`` under the sweep folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((folder / str(run_id)).glob("events.*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") == kind:
                    return ev
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event for run {run_id} under {folder} within {timeout}s")


def wait_dead(pid: int, timeout: float = 60.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive after {timeout}s")



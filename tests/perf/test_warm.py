"""A warm worker (many runs in one process, dataset cached) gives exactly the numbers of
a cold process per run: every per-epoch loss, every valid score and every metric.

Order A, B, A: B differs from A in learning rate *and* depth (so in the model built and
the optimiser), and A's second run would drift if anything from A or B leaked (RNG
streams, sampler or dataloader generator state, the in-place shuffle of the cached
dataset, the optimiser, logging handlers, thread count).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.perf.perf_helpers import numbers, run_tasks, task

BASE = {
    "dataset": "ml-100k", "epochs": 2, "train_batch_size": 4096, "embedding_size": 16,
    "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
    "seed": 2020, "metric_decimal_place": 12,  # valid scores to 12 places; final metrics unrounded (perf_helpers.numbers)
}
A = {**BASE, "model": "LightGCN", "learning_rate": 0.001, "n_layers": 2}
B = {**BASE, "model": "LightGCN", "learning_rate": 0.004, "n_layers": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    warm = run_tasks([task(1, A, root), task(2, B, root), task(3, A, root)], root, "warm", "--threads=1")
    cold_a = run_tasks([task(11, A, root)], root, "cold_a", "--no-cache", "--threads=1")
    cold_b = run_tasks([task(12, B, root)], root, "cold_b", "--no-cache", "--threads=1")
    return warm, cold_a, cold_b


def test_warm_runs_equal_cold_runs_exactly(runs):
    """Dataset cache (deep copy) and adjacency cache on, vs both off in fresh processes."""
    warm, cold_a, cold_b = runs
    a1, b, a2 = (numbers(evs) for evs in warm["runs"])
    ca, cb = numbers(cold_a["runs"][0]), numbers(cold_b["runs"][0])
    assert a1[-1][1] == "done" and b[-1][1] == "done", (a1[-1], b[-1])
    assert len([x for x in a1 if x[0] == "epoch"]) == 2
    assert a1 == ca
    assert b == cb
    assert a2 == ca
    # the cached normalised adjacency was really reused (B and the second A), not rebuilt
    assert warm["adj_stats"] == {"hits": 2, "misses": 1}
    assert cold_a["adj_stats"] == {"hits": 0, "misses": 0}
    # and so were the dataloaders: B (other model settings, same data) and the second A
    assert warm["loader_stats"] == {"hits": 2, "misses": 1}
    assert cold_a["loader_stats"] == {"hits": 0, "misses": 0}
    # A and B really differ, so equality above is not vacuous; it covered the unrounded
    # means and every user's values
    assert a1[-1][3] != b[-1][3]
    assert set(a1[-1][6]) == set(a1[-1][7]) == {"valid", "test"} and a1[-1][6] != b[-1][6]
    assert a1[0][2] != b[0][2]


def test_no_global_state_leaks_between_runs(runs):
    warm, _, _ = runs
    for after in warm["after"]:
        assert after == warm["before"]
    assert warm["before"]["threads"] == 1


def test_each_warm_run_writes_its_own_log(runs):
    warm, _, _ = runs
    logs = [next(e["log_path"] for e in evs if e["type"] == "started") for evs in warm["runs"]]
    texts = [Path(p).read_text() for p in logs]
    assert len(set(logs)) == 3
    for i, text in enumerate(texts, 1):
        assert f"ablate run {i} " in text
        assert all(f"ablate run {j} " not in text for j in (1, 2, 3) if j != i)


def test_the_dataloader_key_covers_every_setting_recboles_data_code_reads():
    """A setting RecBole's data code reads but the key ignores would let two runs with
    different data share dataloaders. Scan recbole/data and recbole/sampler for it."""
    import re

    import recbole

    from ablate import worker

    root = Path(recbole.__file__).parent
    read = set()
    for folder in ("data", "sampler"):
        for path in (root / folder).rglob("*.py"):
            read |= set(re.findall(r"config\[[\"']([A-Za-z_]+)[\"']\]", path.read_text(encoding="utf-8")))
    assert len(read) > 50  # the scan found RecBole's reads, so the check below is not vacuous
    per_run = {"checkpoint_dir", "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path"}
    assert read - per_run <= worker.DATA_KEYS, sorted(read - per_run - worker.DATA_KEYS)


def test_runs_share_dataloaders_only_when_their_data_settings_match():
    import sys as _sys

    import recbole
    from recbole.config import Config

    from ablate import compat, worker

    compat.apply()
    data_path = str(Path(recbole.__file__).parent / "dataset_example")

    def key(**over):
        argv, _sys.argv = _sys.argv, _sys.argv[:1]
        try:
            cfg = Config(model="LightGCN", dataset="ml-100k",
                         config_dict={**BASE, "data_path": data_path, "state": "ERROR", **over})
        finally:
            _sys.argv = argv
        return worker._loaders_key(cfg)

    base = key()
    assert key(learning_rate=0.01, n_layers=4, reg_weight=0.1, epochs=9) == base  # model and training settings
    for over in ({"seed": 7}, {"train_batch_size": 1024}, {"eval_batch_size": 999},
                 {"eval_args": {**BASE["eval_args"], "split": {"RS": [0.7, 0.2, 0.1]}}},
                 {"train_neg_sample_args": {"distribution": "popularity", "sample_num": 1}},
                 {"user_inter_num_interval": "[5,inf)"}):
        assert key(**over) != base, over


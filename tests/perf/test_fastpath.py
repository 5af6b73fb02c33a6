"""``ablate.fastpath`` gives RecBole's numbers bit for bit, with less host work per batch.

Three levels: the batches themselves (order, fields, negatives) over several epochs,
whole runs through the worker (every loss term, valid score and metric, for a one-loss
model and a tuple-loss one), and the host syncs an epoch costs.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ablate import compat, fastpath

from tests.perf.perf_helpers import numbers, run_tasks, task

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "dataset": "ml-100k", "epochs": 2, "train_batch_size": 2048, "embedding_size": 8,
    "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10", "eval_batch_size": 409600,
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
    "seed": 2020, "metric_decimal_place": 12,
}


@pytest.fixture(scope="module")
def ml100k():
    """``make(**overrides) -> (config, train_data)`` from one parsed ml-100k dataset."""
    compat.apply()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    data_path = str(Path(recbole.__file__).parent / "dataset_example")
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(model="LightGCN", dataset="ml-100k", config_dict={**BASE, "data_path": data_path, "state": "ERROR"})
    finally:
        sys.argv = argv
    dataset = create_dataset(config)

    def make(**overrides):
        cfg = copy.deepcopy(config)  # overrides stay with this call
        for k, v in overrides.items():
            cfg[k] = v
        init_seed(cfg["seed"], True)
        train, _, _ = data_preparation(cfg, copy.deepcopy(dataset))
        return cfg, train

    return make


def _epochs(batches_of, n: int) -> list[list[dict]]:
    from recbole.utils import init_seed

    init_seed(7, True)  # the negative sampler draws from numpy's global stream
    return [[{k: v.clone() for k, v in b.interaction.items()} for b in batches_of()] for _ in range(n)]


POPULARITY_2 = {"distribution": "popularity", "sample_num": 2, "alpha": 1.0, "dynamic": False, "candidate_num": 0}


@pytest.mark.parametrize("table, shuffle, negatives", [
    (True, True, None), (False, True, None), (True, False, None), (False, False, None), (True, True, POPULARITY_2),
], ids=["bool-table", "binary-search", "bool-table-in-order", "binary-search-in-order", "popularity-2-negatives"])
def test_batches_and_negatives_equal_recboles(ml100k, monkeypatch, table, shuffle, negatives):
    extra = {"train_neg_sample_args": negatives} if negatives else {}
    _, theirs = ml100k(shuffle=shuffle, **extra)
    _, ours = ml100k(shuffle=shuffle, **extra)
    kind = torch.utils.data.RandomSampler if shuffle else torch.utils.data.SequentialSampler
    assert type(ours.sampler) is kind
    assert ours.neg_sample_args["distribution"] == ("popularity" if negatives else "uniform")
    assert ours.times == (2 if negatives else 1)
    monkeypatch.setattr(fastpath, "TABLE_MAX", 2**26 if table else 0)
    assert fastpath._batchable(ours)
    fastpath.vectorize_sampler(ours._sampler)
    assert "sample_by_key_ids" in vars(ours._sampler) and "sample_by_key_ids" not in vars(theirs._sampler)

    expected = _epochs(lambda: iter(theirs), 3)
    got = _epochs(lambda: fastpath.train_batches(ours), 3)
    assert [len(e) for e in got] == [len(e) for e in expected] == [len(theirs)] * 3
    for e_got, e_exp in zip(got, expected):
        for b_got, b_exp in zip(e_got, e_exp):
            assert b_got.keys() == b_exp.keys()
            for k in b_exp:
                assert torch.equal(b_got[k], b_exp[k]), k
    # not vacuous: epochs differ from each other, and negatives avoid each user's positives
    if shuffle:
        assert not torch.equal(got[0][0]["user_id"], got[1][0]["user_id"])
    used = ours._sampler.used_ids
    batch = got[0][0]
    assert not any(int(i) in used[int(u)] for u, i in zip(batch["user_id"], batch["neg_item_id"]))


def test_unrecognised_loaders_and_samplers_go_through_recbole(ml100k):
    from recbole.sampler import Sampler

    _, loader = ml100k()
    loader.num_workers = 1  # what fastpath does not reproduce: it must iterate the loader itself
    assert not fastpath._batchable(loader)

    class Other(Sampler):  # e.g. a sampler drawing ids from another range than item ids
        pass

    other = copy.copy(loader._sampler)
    other.__class__ = Other
    fastpath.vectorize_sampler(other)
    fastpath.vectorize_sampler(None)
    assert "sample_by_key_ids" not in vars(other)


def test_runs_equal_recboles_loop_exactly(tmp_path):
    """One warm process, each model with fast_path off then on: every number equal."""
    ot_defaults = yaml.safe_load((ROOT / "models" / "config" / "LightGCNOT.yaml").read_text())
    configs = [
        {**BASE, "model": "LightGCN"},
        {**ot_defaults, **BASE, "model": "LightGCNOT", "ot_weight": 0.01, "epochs": 1},
        {**BASE, "model": "SGL", "epochs": 1},  # new augmented graphs every epoch, flagged by fastpath
        {**BASE, "model": "NCL", "epochs": 1, "num_clusters": 50},  # its own trainer loop: only the adjacency flag
    ]
    tasks = [task(i, {**c, "fast_path": fast}, tmp_path)
             for i, (c, fast) in enumerate((c, f) for c in configs for f in (False, True))]
    runs = [numbers(evs) for evs in run_tasks(tasks, tmp_path, "tasks", "--threads=1")["runs"]]
    for slow, fast in (runs[0:2], runs[2:4], runs[4:6], runs[6:8]):
        assert slow[-1][1] == "done", slow[-1]
        assert set(slow[-1][6]) == set(slow[-1][7]) == {"valid", "test"}  # unrounded means and per-user values
        assert fast == slow
    assert set(runs[2][0][2]) == {"bpr", "reg", "ot"} and runs[2][0][2]["ot"] > 0  # a tuple loss, really
    assert runs[0][-1][3] != runs[2][-1][3]


class _CountItems(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``bool(t)``): on a GPU,
    each is a synchronisation with the device."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_an_epoch_reads_the_loss_back_once_per_check_not_per_batch(ml100k):
    from recbole.model.general_recommender import LightGCN
    from recbole.utils import get_trainer, init_seed

    # SGD: Adam reads its step counters with .item() (host tensors, no GPU sync) every step
    config, train = ml100k(train_batch_size=512, learner="sgd", n_layers=1)
    n = len(train)
    assert n > 2 * fastpath.CHECK_EVERY
    counts = {}
    for name in ("recbole", "fastpath"):
        init_seed(2020, True)
        model = LightGCN(config, train._dataset)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        assert fastpath.replaceable(trainer)
        checks = []
        with _CountItems() as c:
            if name == "recbole":
                trainer._train_epoch(train, 0)
            else:
                fastpath.train_epoch(trainer, train, 0, lambda total: checks.append(bool(torch.isfinite(total).all())))
        counts[name] = c.n
    assert counts["recbole"] >= 2 * n  # .item() and the isnan test, every batch
    # the NaN checks, and one look at the order of the adjacency before it is flagged
    assert counts["fastpath"] == n // fastpath.CHECK_EVERY + 1 + 1 == len(checks) + 1
    assert counts["fastpath"] * 16 < counts["recbole"]
    assert all(checks)


@pytest.mark.parametrize("model", ["LightGCN", "NCL", "SGL-ED", "SGL-RW"])
def test_recboles_sorted_adjacency_is_flagged_coalesced_and_left_unchanged(ml100k, model):
    """RecBole's LightGCN, NCL and SGL build their COO matrices in coalesced order but
    unflagged, which on CUDA makes every torch.sparse.mm sort them again."""
    import recbole
    from recbole.config import Config
    from recbole.utils import get_model, init_seed

    _, train = ml100k()
    name, _, sgl_type = model.partition("-")
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(model=name, dataset="ml-100k", config_dict={
            **BASE, "data_path": str(Path(recbole.__file__).parent / "dataset_example"), "state": "ERROR",
            **({"type": sgl_type} if sgl_type else {})})
    finally:
        sys.argv = argv
    init_seed(2020, True)
    model = get_model(name)(config, train._dataset)
    model.train()  # SGL draws its augmented graphs
    names = {"LightGCN": ["norm_adj_matrix"], "NCL": ["norm_adj_mat"]}.get(name, ["train_graph", "sub_graph1", "sub_graph2"])
    mats = [t for n in names for t in (getattr(model, n) if isinstance(getattr(model, n), list) else [getattr(model, n)])]
    assert len(mats) == (1 if name != "SGL" else 1 + 2 * (config["n_layers"] if sgl_type == "RW" else 1))
    before = [(t._indices().clone(), t._values().clone()) for t in mats]
    x = torch.randn(model.n_users + model.n_items, 8, generator=torch.Generator().manual_seed(0))
    products = [torch.sparse.mm(t, x) for t in mats]
    assert not any(t.is_coalesced() for t in mats)
    assert fastpath.flag_sorted_sparse(model) == len(mats)
    for t, (idx, val), y in zip(mats, before, products):
        assert t.is_coalesced() and torch.equal(t.coalesce().indices(), idx) and torch.equal(t.coalesce().values(), val)
        assert torch.equal(torch.sparse.mm(t, x), y)


def test_a_matrix_out_of_order_is_not_flagged():
    class Holder(torch.nn.Module):
        pass

    m = Holder()
    m.adj = torch.sparse_coo_tensor(torch.tensor([[1, 0], [0, 1]]), torch.tensor([1.0, 2.0]), (2, 2))
    m.dup = torch.sparse_coo_tensor(torch.tensor([[0, 0], [1, 1]]), torch.tensor([1.0, 2.0]), (2, 2))
    assert fastpath.flag_sorted_sparse(m) == 0
    assert not m.adj.is_coalesced() and not m.dup.is_coalesced()

"""SimGCL and XSimGCL against RecBole-GNN's own numbers.

``fixtures/recbole_gnn/`` holds what RecBole-GNN's ``SimGCL`` and ``XSimGCL`` computed
for the first training batch of ml-100k (see its README.md and ``make_fixtures.py``):
their config defaults, the three loss terms, the gradients of both embedding tables and
``full_sort_predict`` for four users, from stored initial embeddings and a seeded noise
stream. Here our models get the same config, graph, embeddings, batch and noise seed and
must reproduce every number at relative tolerance 1e-5.

The two implementations sum in different orders (PyG's scatter vs ``torch.sparse.mm``,
``cross_entropy`` vs ``-log(exp / sum exp)``) in float32, so a value is compared to
``rtol * |value|`` plus ``rtol`` times the largest magnitude of its array: an element
that is a tiny difference of large terms (a gradient entry near zero) is then judged on
the scale of its array, not on its own.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml

import models

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "recbole_gnn")
RTOL = 1e-5

with open(os.path.join(FIXTURES, "meta.json")) as f:
    META = json.load(f)
INIT = np.load(os.path.join(FIXTURES, "SimGCL.npz"))  # the initial embeddings live there


def assert_rel(actual, expected, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    atol = RTOL * float(np.abs(expected).max())
    err = np.abs(actual - expected) - RTOL * np.abs(expected)
    worst = int(np.argmax(err))
    assert err.flat[worst] <= atol, (
        f"{what}: at flat index {worst} ours {actual.flat[worst]!r} vs RecBole-GNN "
        f"{expected.flat[worst]!r} (tolerance {RTOL} relative, {atol:.3g} absolute)"
    )


@pytest.mark.parametrize("name", ["SimGCL", "XSimGCL"])
def test_yaml_defaults_are_recbole_gnns(name):
    """Every key RecBole-GNN's config resolves for the model (its YAML over RecBole's
    overall.yaml) has the same value in ours."""
    with open(models.default_config_file(name)) as f:
        ours = yaml.safe_load(f)
    reference = META["models"][name]["defaults"]
    assert {k: ours.get(k) for k in reference} == reference


@pytest.fixture(scope="module")
def reference_run(recbole_env):
    """``run(name) -> (model, losses, reference arrays)`` after one forward/backward."""

    def run(name):
        from recbole.data.interaction import Interaction

        cls = models.MODELS[name]
        ref = np.load(os.path.join(FIXTURES, f"{name}.npz"))
        meta = META["models"][name]
        cfg, tr, _, _ = recbole_env(cls, **META["overrides"])
        assert {k: cfg[k] for k in meta["config"]} == meta["config"]

        model = cls(cfg, tr._dataset)
        graph = meta["graph"]
        assert (model.n_users, model.n_items) == (graph["n_users"], graph["n_items"])
        coo = tr._dataset.inter_matrix(form="coo")
        key = np.unique(coo.row.astype(np.int64) * model.n_items + coo.col.astype(np.int64))
        assert (key.size, int(key.sum())) == (graph["n_edges"], graph["key_sum"]), "not the same training graph"

        with torch.no_grad():
            model.user_embedding.weight.copy_(torch.from_numpy(INIT["init_user"]))
            model.item_embedding.weight.copy_(torch.from_numpy(INIT["init_item"]))
        batch = Interaction({
            model.USER_ID: torch.from_numpy(ref["batch_user"]).long(),
            model.ITEM_ID: torch.from_numpy(ref["batch_item"]).long(),
            model.NEG_ITEM_ID: torch.from_numpy(ref["batch_neg_item"]).long(),
        })
        model.train()
        torch.manual_seed(META["noise_seed"])
        losses = model.calculate_loss(batch)
        sum(losses).backward()
        model.eval()
        with torch.no_grad():
            users = torch.tensor(META["predict_users"])
            scores = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)
        return model, [x.item() for x in losses], scores, ref

    return run


@pytest.mark.parametrize("name", ["SimGCL", "XSimGCL"])
def test_first_batch_matches_recbole_gnn(reference_run, name):
    model, losses, scores, ref = reference_run(name)
    assert list(model.loss_names) == META["models"][name]["loss_names"]
    for term, ours, theirs in zip(model.loss_names, losses, ref["loss"]):
        assert_rel(ours, theirs, f"{name} loss term {term}")
    assert_rel(model.user_embedding.weight.grad, ref["grad_user"], f"{name} user embedding gradient")
    assert_rel(model.item_embedding.weight.grad, ref["grad_item"], f"{name} item embedding gradient")
    assert_rel(scores, ref["full_sort_predict"], f"{name} full_sort_predict")

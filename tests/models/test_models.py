"""Contract, SimGCL/XSimGCL definitions, RecBole training/eval/checkpoint round trip."""

import os

import pytest
import torch

import models
from models.simgcl import simgcl_noise


def test_registry_contract():
    assert {"LightGCNOT", "SimGCL", "XSimGCL"} <= set(models.MODELS)
    for name, cls in models.MODELS.items():
        path = models.default_config_file(name)
        assert path and os.path.isabs(path) and os.path.isfile(path)
        assert models.get_model(name) is cls
        assert isinstance(cls.loss_names, tuple)
    assert models.get_model("Nope") is None and models.default_config_file("Nope") is None


def test_lightgcnot_yaml_has_every_key_it_reads():
    import yaml

    from models.lightgcn_ot import _DEFAULTS

    with open(models.default_config_file("LightGCNOT")) as f:
        keys = set(yaml.safe_load(f))
    assert set(_DEFAULTS) | {"embedding_size", "n_layers", "reg_weight", "require_pow"} == keys


def test_simgcl_noise_norm_is_eps():
    emb = torch.randn(50, 16)
    noise = simgcl_noise(emb, 0.1)
    torch.testing.assert_close(noise.norm(dim=1), torch.full((50,), 0.1))
    assert ((noise * emb) >= 0).all()  # same sign as the embedding


@pytest.mark.parametrize("name", ["SimGCL", "XSimGCL"])
def test_simgcl_excludes_layer0_and_perturbs(recbole_env, name):
    cls = models.MODELS[name]
    cfg, tr, _, _ = recbole_env(cls)
    model = cls(cfg, tr._dataset)
    layers = model.propagate()
    u, i = model.forward()
    mean_1l = torch.stack(layers[1:], 1).mean(1)
    torch.testing.assert_close(torch.cat([u, i]), mean_1l)
    assert not torch.allclose(torch.cat([u, i]), torch.stack(layers, 1).mean(1))
    torch.manual_seed(0)
    pl = model.propagate(perturbed=True)
    torch.testing.assert_close(pl[0], layers[0])  # layer 0 never perturbed
    # layer 1 of a perturbed forward = A E0 + noise with row norm eps (rows without zeros)
    diff = pl[1] - layers[1]
    nz = (layers[1] != 0).all(dim=1)
    torch.testing.assert_close(diff[nz].norm(dim=1), torch.full((int(nz.sum()),), model.eps))


@pytest.mark.parametrize("name,overrides", [
    ("LightGCNOT", {"ot_weight": 1e-3}),
    ("SimGCL", {}),
    ("XSimGCL", {}),
    ("LightGCNOT", {"proto_weight": 1e-6, "proto_warmup": 0, "num_clusters": 20}),
])
def test_trains_evaluates_and_checkpoints(recbole_env, name, overrides):
    from ablate import compat
    from recbole.utils import get_trainer

    cls = models.MODELS[name]
    cfg, tr, va, te = recbole_env(cls, **overrides)
    model = cls(cfg, tr._dataset)
    trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, model)
    losses = trainer._train_epoch(tr, 0, show_progress=False)
    assert isinstance(losses, tuple) and len(losses) == len(model.loss_names)
    assert all(torch.isfinite(torch.tensor(x)) for x in losses)
    trainer._save_checkpoint(0)
    result = trainer.evaluate(te, load_best_model=False, show_progress=False)
    assert 0 <= result["ndcg@10"] <= 1
    state = compat.load_checkpoint(trainer.saved_model_file)
    fresh = cls(cfg, tr._dataset)
    fresh.load_state_dict(state["state_dict"])
    fresh.load_other_parameter(state.get("other_parameter"))
    fresh.eval()
    inter = next(iter(te))[0]
    model.eval()
    with torch.no_grad():
        model.restore_user_e = model.restore_item_e = None
        torch.testing.assert_close(fresh.full_sort_predict(inter), model.full_sort_predict(inter))


def test_symmetric_propagation_has_spmms_gradient_bit_for_bit(recbole_env):
    """The backward of propagate_symmetric multiplies by the adjacency itself instead of
    a re-coalesced transpose: valid because the adjacency is bitwise symmetric."""
    from models.lightgcn_base import propagate_symmetric

    config, train, _, _ = recbole_env(models.get_model("SimGCL"))
    adj = models.get_model("SimGCL")(config, train._dataset).norm_adj_matrix
    t = adj.t().coalesce()
    assert torch.equal(t.indices(), adj.indices()) and torch.equal(t.values(), adj.values())

    x = torch.randn(adj.shape[0], 16, generator=torch.Generator().manual_seed(0))
    w = torch.randn(adj.shape[0], 16, generator=torch.Generator().manual_seed(1))
    grads = []
    for spmm in (torch.sparse.mm, propagate_symmetric):
        x0 = x.clone().requires_grad_()
        y = x0
        for _ in range(3):
            y = spmm(adj, y)
        (y * w).sum().backward()
        grads.append((y.detach(), x0.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert grads[1][1].abs().sum() > 0


def test_lightgcnot_simgcl_view_is_the_backbones_perturbed_forward(recbole_env):
    """The ``simgcl`` view runs :meth:`LightGCNBase.propagate` with LightGCNOT's ``perturb``
    hook (no loop of its own): ``E_l = A E_{l-1} + sign(.) normalize(U) eps``, read out as z1
    is (here the mean of layers 1..L), written out by hand with the same random draws."""
    from models import LightGCNOT

    cfg, tr, _, _ = recbole_env(LightGCNOT, ot_z1="mean1", ot_z2="simgcl", ot_simgcl_eps=0.2)
    model = LightGCNOT(cfg, tr._dataset)
    nodes = torch.tensor([[5, 9, 1], [1000, 1003, 1010]])
    torch.manual_seed(7)
    z1, z2 = model.views(model.propagate(), nodes)
    torch.manual_seed(7)
    emb, out = model.get_ego_embeddings(), []
    for _ in range(model.n_layers):
        emb = torch.sparse.mm(model.norm_adj_matrix, emb)
        emb = emb + torch.sign(emb) * torch.nn.functional.normalize(torch.rand_like(emb), dim=-1) * 0.2
        out.append(emb)
    want = torch.stack(out, 1).mean(1)[nodes.reshape(-1)].view(2, 3, -1)
    assert torch.equal(z2, want)
    assert not torch.allclose(z1, z2)

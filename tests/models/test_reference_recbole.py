"""RecBole's own LightGCN, SGL and NCL through ablate give what RecBole's quick start gives.

The reference is ``tests/oracles/bare_recbole.py``: a fresh process doing what
``recbole.quick_start.run_recbole`` does, step for step (``run_recbole`` itself cannot be
imported on this stack: it imports ray.tune). The same config through ``ablate run``
(warm worker, fast path, dataloader cache, SQLite) must store exactly the same valid and
test metrics, at full precision.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.oracles import recbole_runs as c

MODELS = {
    "LightGCN": {},
    "SGL": {},
    "NCL": {"num_clusters": 20},
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference_recbole")
    spec = c.write_spec(folder, name="reference", epochs=1, grid={"n_layers": [2]})
    text = spec.read_text().replace("variants:\n  lightgcn:\n    model: LightGCN\n    grid:\n      n_layers:\n      - 2\n", "")
    rows = "".join(f"  {m}:\n    model: {m}\n" + "".join(f"    params: {{{k}: {v}}}\n" for k, v in p.items())
                   for m, p in MODELS.items())
    spec.write_text(text + "baselines:\n" + rows)
    runs = {r.model: r for r in c.planned(spec)}
    assert set(runs) == set(MODELS), spec.read_text()
    db = folder / "results.db"
    c.ablate_run(spec, db, "--cpu", "--jobs", "1")
    return folder, runs, c.stored_metrics(db)


@pytest.mark.parametrize("model", list(MODELS))
def test_ablate_equals_recboles_quick_start(stored, model):
    folder, runs, metrics = stored
    run = runs[model]
    bare = c.bare_run(run.model, run.config, Path(folder) / f"bare-{model}")
    assert c.compare({run.key: bare}, metrics) == []
    assert 0 < metrics[run.key]["test"]["recall@10"] < 1  # a trained model, not an empty dict

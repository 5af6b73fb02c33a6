"""Every shipped experiment spec expands cleanly, and on ml-100k too (the smoke-test path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate import plan
from ablate.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_expands_on_ml100k_without_duplicate_rows(path):
    runs = plan.expand(load_spec(path), {"dataset": "ml-100k"})
    assert runs, "no runs"
    assert plan.duplicates(runs) == []
    names = [(r.name, r.seed) for r in runs]
    assert len(names) == len(set(names))
    assert all(r.config["data_path"].endswith("dataset_example") for r in runs)


def test_the_ablation_specs_cover_the_notebook_axes():
    ot_axes = {}
    for name in ("sampling", "views", "ot"):
        for r in plan.expand(load_spec(SPECS[0].parent / f"{name}.yaml"), {"dataset": "ml-100k"}):
            for k, v in r.config.items():
                ot_axes.setdefault(k, set()).add(str(v))
    assert {"A", "A2"} <= ot_axes["sample_adj"] and {"A", "A2"} <= ot_axes["subg1_adj"]
    assert {"wd", "gwd"} <= ot_axes["ot_distance"] and {"bce", "infonce"} <= ot_axes["ot_loss"]
    assert {"1e-06", "1e-07", "1e-08"} <= ot_axes["ot_weight"]
    assert len(ot_axes["ot_z2"]) >= 3 and len(ot_axes["k2"]) >= 3

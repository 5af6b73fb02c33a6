"""Spec parsing and plan expansion: pure, fast, no RecBole training."""

from __future__ import annotations

import textwrap

import pytest

from ablate import plan
from ablate.errors import SpecError
from ablate.spec import parse_spec

BASE = "base: {dataset: ml-100k, epochs: 1}\n"


def spec(text: str, path="exp.yaml"):
    return parse_spec(text, path)


def test_grid_is_a_product_zip_is_lock_step_and_seeds_multiply():
    s = spec(BASE + textwrap.dedent("""
        seeds: [1, 2]
        baselines: {LightGCN: {model: LightGCN}}
        variants:
          v: {model: LightGCN}
        grid: {n_layers: [1, 2, 3], embedding_size: [8, 16]}
        zip: [{learning_rate: [0.1, 0.01], reg_weight: [1.0e-4, 1.0e-5]}]
    """))
    runs = plan.expand(s)
    base = [r for r in runs if r.role == "baseline"]
    var = [r for r in runs if r.role == "variant"]
    assert len(base) == 2  # grids apply to variants only; one per seed
    assert len(var) == 3 * 2 * 2 * 2
    pairs = {(r.config["learning_rate"], r.config["reg_weight"]) for r in var}
    assert pairs == {(0.1, 1e-4), (0.01, 1e-5)}  # zipped, never crossed
    assert {r.seed for r in var} == {1, 2}
    assert len({r.key for r in runs}) == len(runs)


def test_extends_inherits_model_and_params_and_overrides_them():
    s = spec(BASE + textwrap.dedent("""
        variants:
          default: {model: LightGCN, params: {n_layers: 3, reg_weight: 1.0e-4}}
          child: {extends: default, params: {n_layers: 1}}
          grandchild: {extends: child, params: {learning_rate: 0.01}}
    """))
    by = {r.variant: r for r in plan.expand(s)}
    assert by["child"].model == "LightGCN"
    assert by["child"].config["n_layers"] == 1 and by["child"].config["reg_weight"] == 1e-4
    assert by["grandchild"].config["n_layers"] == 1 and by["grandchild"].config["learning_rate"] == 0.01


def test_run_names_follow_the_template_with_compact_numbers():
    s = spec(BASE + textwrap.dedent("""
        variants:
          ot: {model: LightGCN}
        grid: {reg_weight: [1.0e-7, 0.001], n_layers: [0, 30]}
        run_name: "{n_layers}k1_{reg_weight}ot"
    """))
    names = [r.name for r in plan.expand(s)]
    assert names == ["0k1_1e-7ot", "30k1_1e-7ot", "0k1_0.001ot", "30k1_0.001ot"]


def test_default_names_put_the_value_before_the_axis_like_the_notebook():
    s = spec(BASE + "variants: {v: {model: LightGCN}}\ngrid: {n_layers: [0, 3]}\n")
    assert [r.name for r in plan.expand(s)] == ["v_0n_layers", "v_3n_layers"]


def test_plain_1e_minus_7_is_a_float_not_a_string():
    s = spec(BASE + "variants: {v: {model: LightGCN, params: {reg_weight: 1e-7}}}\n")
    assert plan.expand(s)[0].config["reg_weight"] == 1e-7


def test_key_ignores_local_paths_and_key_order_but_not_values():
    a = {"model": "LightGCN", "dataset": "ml-100k", "seed": 1, "n_layers": 2, "data_path": "/x", "gpu_id": "0"}
    b = {"n_layers": 2, "seed": 1, "dataset": "ml-100k", "model": "LightGCN", "data_path": "/y", "gpu_id": "3"}
    assert plan.run_key(a) == plan.run_key(b)
    assert plan.run_key(a) != plan.run_key({**a, "n_layers": 3})
    assert plan.run_key(a) != plan.run_key({**a, "seed": 2})


def test_fast_path_is_a_known_setting_outside_the_run_key():
    on = plan.expand(spec(BASE + "baselines: {LightGCN: {model: LightGCN}}\n"))[0]
    off = plan.expand(spec("base: {dataset: ml-100k, epochs: 1, fast_path: false}\n"
                           "baselines: {LightGCN: {model: LightGCN, params: {fast_path: false}}}\n"))[0]
    assert off.config["fast_path"] is False and "fast_path" not in on.config
    assert off.key == on.key  # it changes how an epoch is driven, not its numbers


def test_model_defaults_are_part_of_the_resolved_config():
    s = spec(BASE + "baselines: {LightGCN: {model: LightGCN}}\n")
    cfg = plan.expand(s)[0].config
    assert cfg["n_layers"] == 2 and cfg["reg_weight"] == 1e-5  # RecBole's LightGCN.yaml
    explicit = spec(BASE + "baselines: {LightGCN: {model: LightGCN, params: {n_layers: 2}}}\n")
    assert plan.expand(explicit)[0].key == plan.expand(s)[0].key


def test_overrides_win_and_bundled_dataset_needs_no_path():
    s = spec("base: {dataset: ml-1m, data_path: /nonexistent}\nbaselines: {L: {model: LightGCN}}\n")
    with pytest.raises(SpecError, match="dataset folder not found"):
        plan.expand(s)
    run = plan.expand(s, {"dataset": "ml-100k", "epochs": 2})[0]
    assert run.config["epochs"] == 2 and run.config["data_path"].endswith("dataset_example")


def test_relative_data_path_is_taken_from_the_spec_folder(tmp_path):
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "exp").mkdir()
    s = parse_spec("base: {dataset: toy, data_path: ../data}\nbaselines: {L: {model: LightGCN}}\n", tmp_path / "exp" / "s.yaml")
    assert plan.expand(s)[0].config["data_path"] == str((tmp_path / "data").resolve())


def test_identical_configs_under_two_names_are_reported():
    s = spec(BASE + "baselines: {A: {model: LightGCN}}\nvariants: {B: {model: LightGCN}}\n")
    assert plan.duplicates(plan.expand(s)) == [("A", "B")]


@pytest.mark.parametrize(
    "text, message",
    [
        (BASE + "variants: {v: {model: LightGCNN}}\n", "unknown model 'LightGCNN' (did you mean 'LightGCN'?)"),
        (BASE + "variants: {v: {model: LightGCN}}\ngrid: {n_layers: 3}\n", "grid.n_layers: must be a list"),
        (BASE + "variants: {v: {model: LightGCN, param: {}}}\n", "unknown key 'param'"),
        (BASE + "variantz: {}\n", "unknown key 'variantz'"),
        (BASE + "variants: {v: {model: LightGCN}}\ngrid: {n_layers: []}\n", "is empty: the expansion has no runs"),
        (BASE, "no baselines and no variants"),
        (BASE + "variants: {v: {model: LightGCN}}\nzip: [{n_layers: [1, 2], reg_weight: [0.1]}]\n", "equal length"),
        (BASE + "variants: {a: {extends: b}, b: {extends: a}}\n", "cycle"),
        (BASE + "variants: {a: {extends: nope, model: LightGCN}}\n", "unknown variant 'nope'"),
        (BASE + "variants: {v: {model: LightGCN, params: {embeding_size: 8}}}\n", "did you mean 'embedding_size'"),
        (BASE + "variants: {v: {model: LightGCN}}\ngrid: {n_layers: [1, 2]}\nrun_name: same\n", "run name 'same' is given to two different configs"),
        (BASE + "variants: {v: {model: LightGCN}}\nrun_name: '{nope}'\n", "unknown field {nope}"),
        (BASE + "baselines: {v: {model: LightGCN}}\nvariants: {v: {model: LightGCN}}\n", "both a baseline and a variant"),
        ("base: [1\n", "YAML syntax error"),
        ("- a\n- b\n", "must be a mapping"),
        (BASE + "seeds: []\nvariants: {v: {model: LightGCN}}\n", "seeds: must list at least one seed"),
        (BASE + "base: {}\n", "duplicate key 'base'"),
        ("!!python/object/apply:os.system ['echo hi']\n", "YAML syntax error"),
    ],
)
def test_every_bad_spec_is_one_clear_line(text, message):
    with pytest.raises(SpecError) as err:
        plan.expand(parse_spec(text, "bad.yaml"))
    text_err = str(err.value)
    assert "\n" not in text_err
    assert text_err.startswith("bad.yaml")
    assert message in text_err


def test_errors_name_the_line_of_the_mistake():
    text = BASE + "variants:\n  v:\n    model: LightGCN\ngrid:\n  n_layers: 3\n"
    with pytest.raises(SpecError) as err:
        parse_spec(text, "bad.yaml")
    assert str(err.value).startswith("bad.yaml:6:")


def test_a_variant_grid_or_zip_replaces_the_top_level_one_and_is_inherited():
    s = spec(BASE + textwrap.dedent("""\
        variants:
          default: {model: LightGCN}
          pinned: {model: LightGCN, params: {n_layers: 1, reg_weight: 0.5}, grid: {learning_rate: [0.1, 0.2]}, zip: []}
          child: {extends: pinned}
        grid: {n_layers: [2, 3]}
        zip: [{reg_weight: [0.01, 0.02]}]
    """))
    runs = plan.expand(s)
    by = {}
    for r in runs:
        by.setdefault(r.variant, []).append((r.config["n_layers"], r.config["reg_weight"], r.config.get("learning_rate")))
    assert len(by["default"]) == 4
    assert sorted(by["pinned"]) == [(1, 0.5, 0.1), (1, 0.5, 0.2)]
    assert by["child"] == by["pinned"]
    assert plan.duplicates(runs) != []  # child resolves to pinned's configs, and we say so

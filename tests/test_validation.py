"""Every value of a spec is checked before any run: one line naming file:line and the key,
exit 2, nothing stored. Rules come from the models' defaults YAML (their annotations) and
from ablate.rules for RecBole's settings and models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from ablate import catalog, plan, rules
from ablate.cli import app
from ablate.errors import SpecError
from ablate.spec import parse_spec
from ablate.store import Run, Store
from models import rules as model_rules

# ---------------------------------------------------------------------------- the mistakes

BASE = {
    "dataset": "ml-100k", "epochs": "1", "train_batch_size": "4096", "eval_batch_size": "409600",
    "topk": "[10, 20]", "metrics": "[Recall, NDCG]", "valid_metric": "NDCG@10",
}


def spec_text(base: dict | None = None, params: dict | None = None, model: str = "LightGCNOT", extra: str = "") -> str:
    """A spec whose every setting is on its own line, so a test finds a key's line by reading."""
    lines = ["name: mistakes", "base:"] + [f"  {k}: {v}" for k, v in {**BASE, **(base or {})}.items()]
    lines += ["seeds: [2020]", "baselines:", "  BPR: {model: BPR}", "variants:", "  v:", f"    model: {model}",
              "    params:"]
    layers = {"n_layers": 2} if "n_layers" in catalog.model_defaults(model) else {}
    lines += [f"      {k}: {v}" for k, v in {**layers, **(params or {})}.items()]
    return "\n".join(lines) + "\n" + extra


def line_of(text: str, key: str) -> int:
    """1-based line of the last line that sets ``key`` (independent of ablate's own lookup)."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith(f"{key}:")]
    return hits[-1]


# (case id, base settings, variant params, key that must be named)
MISTAKES = [
    ("batch_size_0", {"train_batch_size": "0"}, {}, "train_batch_size"),
    ("epochs_negative", {"epochs": "-1"}, {}, "epochs"),
    ("valid_metric_not_computed", {"valid_metric": "MRR@10"}, {}, "valid_metric"),
    ("valid_metric_cutoff_not_computed", {"valid_metric": "NDCG@5"}, {}, "valid_metric"),
    ("epochs_word", {"epochs": "ten"}, {}, "epochs"),
    ("learning_rate_word", {"learning_rate": "fast"}, {}, "learning_rate"),
    ("topk_word", {"topk": "[ten]"}, {}, "topk"),
    ("ot_weight_typo", {}, {"ot_weight": "1e-7x"}, "ot_weight"),
    ("metric_typo", {"metrics": "[Recal]"}, {}, "metrics"),
    ("embedding_size_negative", {"embedding_size": "-8"}, {}, "embedding_size"),
    ("learning_rate_negative", {"learning_rate": "-0.1"}, {}, "learning_rate"),
    ("k1_negative", {}, {"k1": "-3"}, "k1"),
    ("sample_adj_choice", {}, {"sample_adj": "B"}, "sample_adj"),
    ("ot_z1_beyond_layers", {}, {"ot_z1": "99"}, "ot_z1"),
    ("split_two_ratios", {"eval_args": "{split: {RS: [0.5, 0.1]}}"}, {}, "eval_args"),
    ("split_not_summing_to_1", {"eval_args": "{split: {RS: [0.8, 0.1, 0.2]}}"}, {}, "eval_args"),
    ("eval_mode", {"eval_args": "{mode: uni0}"}, {}, "eval_args"),
    ("k1_k2_both_zero", {}, {"k1": "0", "k2": "0"}, "k1"),
    ("learner_unknown", {"learner": "adamax"}, {}, "learner"),
    ("value_metric_with_full_ranking", {"metrics": "[AUC]", "valid_metric": "AUC"}, {}, "metrics"),
    ("neg_sampling_distribution", {"train_neg_sample_args": "{distribution: pop}"}, {}, "train_neg_sample_args"),
    # LightGCNOT's switches and the relations between them
    ("param_init_choice", {}, {"param_init": "normal"}, "param_init"),
    ("bpr_weight_negative", {}, {"bpr_weight": "-1"}, "bpr_weight"),
    ("nothing_left_to_train", {}, {"bpr_weight": "0", "reg_weight": "0", "ot_weight": "0"}, "bpr_weight"),
    ("layer_list_beyond_layers", {}, {"ot_z1": "[0, 9]"}, "ot_z1"),
    ("gat_view_over_the_gat_view", {}, {"ot_z1": "gat", "ot_z2": "gat", "ot_gat_input": "z1"}, "ot_z1"),
    ("simgcl_readout_of_a_gat_view", {}, {"ot_z1": "gat", "ot_z2": "simgcl"}, "ot_z1"),
    ("no_centres", {}, {"n_user_centres": "0", "n_item_centres": "0"}, "n_user_centres"),
    ("ot_groups_choice", {}, {"ot_groups": "users"}, "ot_groups"),
    ("path_counts_with_cos_cost", {}, {"a2_weights": "counts", "ot_cost": "cos"}, "a2_weights"),
    ("cos_cost_of_raw_inner_products", {}, {"ot_normalize": "false", "ot_cost": "cos"}, "ot_normalize"),
]


def _stored_runs(db: Path) -> int:
    if not db.exists():
        return 0
    store = Store(str(db), create=False)
    try:
        return len(store.runs(with_children=True))
    finally:
        store.engine.dispose()


def _run_refused(text: str, tmp_path, name: str):
    """``ablate run`` of a spec that must stop before anything runs: exit 2."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(path), "--db", str(tmp_path / "results.db"), "--cpu", "--jobs", "1"])
    assert res.exit_code == 2, res.output
    return path, res


@pytest.mark.parametrize("base,params,key", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_stops_the_sweep_at_its_line(base, params, key, tmp_path):
    text = spec_text(base, params)
    path, res = _run_refused(text, tmp_path, "mistake.yaml")
    db = tmp_path / "results.db"
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    assert lines[0].startswith(f"ablate: error: {path}:{line_of(text, key)}: "), (lines[0], line_of(text, key))
    assert key in lines[0]
    assert _stored_runs(db) == 0


def test_dry_run_refuses_the_same_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text({"epochs": "0"}), encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 2 and f"{path}:{line_of(path.read_text(), 'epochs')}: base.epochs: must be >= 1" in res.stderr


def test_a_mistake_in_a_grid_names_the_grid_line_and_the_value(tmp_path):
    text = spec_text() + "grid:\n  ot_z2: [gat, next]\n  k2: [1, 2, -5]\n"
    with pytest.raises(SpecError) as err:
        plan.expand(parse_spec(text, "g.yaml"))
    assert str(err.value) == f"g.yaml:{line_of(text, 'k2')}: grid.k2[2]: must be >= 0, got -5 (variants.v)"


def test_bounds_over_other_keys_follow_the_run_s_own_n_layers():
    ok = spec_text(params={"n_layers": "4", "ot_z1": "-5", "ot_z2": "4"})
    assert plan.expand(parse_spec(ok))
    bad = spec_text(model="XSimGCL", params={"layer_cl": "3"})
    with pytest.raises(SpecError, match=r"layer_cl: must be <= n_layers \(= 2\), got 3"):
        plan.expand(parse_spec(bad))


def test_recbole_models_have_their_choices_and_ranges():
    for model, params, match in [
        ("SGL", {"type": "XX"}, "type: expected one of ED | ND | RW, got 'XX'"),
        ("SGL", {"drop_ratio": "1.0"}, "drop_ratio: must be < 1, got 1.0"),
        ("NCL", {"ssl_temp": "0"}, "ssl_temp: must be > 0, got 0"),
        ("LightGCN", {"reg_weight": "-1.0e-4"}, "reg_weight: must be >= 0"),
        ("BPR", {"embedding_size": "8.5"}, "embedding_size: expected int >= 1, got float 8.5"),
    ]:
        text = spec_text(params=params, model=model)
        with pytest.raises(SpecError, match=match.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
            plan.expand(parse_spec(text, "r.yaml"))


def test_valid_metric_default_is_blamed_on_metrics_when_the_spec_leaves_it():
    text = spec_text().replace("  valid_metric: NDCG@10\n", "")
    with pytest.raises(SpecError) as err:
        plan.expand(parse_spec(text, "m.yaml"))
    assert f"m.yaml:{line_of(text, 'metrics')}: base.metrics: valid_metric MRR@10 (RecBole's default)" in str(err.value)


def test_override_mistakes_name_the_option(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(), encoding="utf-8")
    res = CliRunner().invoke(app, ["run", str(path), "--dry-run", "-o", "learning_rate=0", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"ablate: error: {path}: -o learning_rate=0: must be > 0, got 0 (baselines.BPR)"


# Settings ablate gives every run itself: where a spec sets one, the one line names what sets it.
OWNED = [
    ("seed_in_base", {"seed": "7"}, {}, "seed", "base.seed: seed is set by the spec's seeds: list (baselines.BPR)"),
    ("seed_in_params", {}, {"seed": "7"}, "seed", "variants.v.params.seed: seed is set by the spec's seeds: list"),
    ("gpu_id", {"gpu_id": "'7'"}, {}, "gpu_id",
     "base.gpu_id: gpu_id is set by ablate run for each run: --gpus, --per-gpu, --cpu (baselines.BPR)"),
    ("use_gpu", {}, {"use_gpu": "false"}, "use_gpu",
     "variants.v.params.use_gpu: use_gpu is set by ablate run for each run: --gpus, --per-gpu, --cpu"),
    ("device", {"device": "cuda"}, {}, "device",
     "base.device: device is set by ablate run for each run: --gpus, --per-gpu, --cpu (baselines.BPR)"),
    ("checkpoint_dir", {"checkpoint_dir": "ckpt"}, {}, "checkpoint_dir",
     "base.checkpoint_dir: checkpoint_dir is set by ablate for each run: its folder under --workdir (baselines.BPR)"),
    ("show_progress", {"show_progress": "true"}, {}, "show_progress",
     "base.show_progress: show_progress is set by ablate: its live view or --log-every lines show progress (baselines.BPR)"),
    ("state", {}, {"state": "DEBUG"}, "state", "variants.v.params.state: state is set by ablate: each run logs at INFO to its run.log"),
    ("model_in_base", {"model": "LightGCN"}, {}, "model", "base.model: model is set by each row's model: (baselines.BPR)"),
]


@pytest.mark.parametrize("base,params,key,message", [m[1:] for m in OWNED], ids=[m[0] for m in OWNED])
def test_a_setting_ablate_sets_itself_is_refused_at_its_line(base, params, key, message, tmp_path):
    """Before, ``base: {seed: 7}`` or ``gpu_id: '7'`` ran and were stored done while the
    seeds list and the scheduler quietly overruled them."""
    assert key in plan.OWNED
    text = spec_text(base, params)
    path, res = _run_refused(text, tmp_path, "owned.yaml")
    db = tmp_path / "results.db"
    value = {**base, **params}[key]
    line = text.splitlines().index(next(ln for ln in text.splitlines() if ln.strip() == f"{key}: {value}")) + 1
    assert res.stderr.splitlines() == [f"ablate: error: {path}:{line}: {message}"]
    assert _stored_runs(db) == 0


def test_a_grid_over_a_setting_ablate_sets_is_refused_at_the_grid():
    text = spec_text() + "grid:\n  seed: [1, 2]\n"
    with pytest.raises(SpecError) as err:
        plan.expand(parse_spec(text, "g.yaml"))
    assert str(err.value) == f"g.yaml:{line_of(text, 'seed')}: grid.seed: seed is set by the spec's seeds: list (variants.v)"


@pytest.mark.parametrize("option, message", [
    ("seed=3", "-o seed=3: seed is set by the spec's seeds: list"),
    ("gpu_id=1", "-o gpu_id=1: gpu_id is set by ablate run for each run: --gpus, --per-gpu, --cpu"),
])
def test_an_override_of_a_setting_ablate_sets_is_refused(tmp_path, option, message):
    """``-o seed=3`` used to be dropped without a word (the seeds list won); a spec's seeds
    or ``ablate rerun ID --seed`` are the ways to choose seeds."""
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(), encoding="utf-8")
    db = tmp_path / "r.db"
    res = CliRunner().invoke(app, ["run", str(path), "-o", option, "--db", str(db), "--cpu", "--jobs", "1"])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"ablate: error: {path}: {message}"
    assert _stored_runs(db) == 0


def _one_done_run(tmp_path):
    """A store holding one done BPR run (id 1) to rerun."""
    db = tmp_path / "r.db"
    store = Store(str(db))
    with store.session() as s:
        s.add(Run(key="0123456789abcdef", name="BPR", model="BPR", dataset="ml-100k", seed=2020,
                  config={"model": "BPR", "dataset": "ml-100k", "epochs": 1, "seed": 2020}, status="done"))
    store.engine.dispose()
    return db


def test_rerun_refuses_an_override_of_a_setting_ablate_sets(tmp_path):
    """``rerun -o seed=7`` would have stored seed 7 in the config under the original's seed
    column; ``--seed 7`` is the way (it stores both)."""
    db = _one_done_run(tmp_path)
    for option, message in (("seed=7", "-o seed=7: seed is set by --seed, not by -o"),
                            ("gpu_id=0", "-o gpu_id=0: gpu_id is set by ablate run for each run: --gpus, --per-gpu, "
                                         "--cpu, not by -o")):
        res = CliRunner().invoke(app, ["rerun", "1", "-o", option, "--db", str(db)])
        assert res.exit_code == 2 and res.stderr.strip() == f"ablate: error: {message}", res.output
    assert _stored_runs(db) == 1


def test_no_shipped_spec_sets_what_ablate_sets():
    from ablate.spec import load_spec

    shipped = sorted(Path(__file__).parent.parent.joinpath("experiments").glob("*.yaml"))
    assert len(shipped) >= 5
    for path in shipped:
        plan.expand(load_spec(path), check_files=False)  # raises SpecError at an owned key


def test_rerun_variation_is_checked_before_it_is_stored(tmp_path):
    db = _one_done_run(tmp_path)
    res = CliRunner().invoke(app, ["rerun", "1", "-o", "train_batch_size=0", "--db", str(db)])
    assert res.exit_code == 2 and res.stderr.strip() == "ablate: error: -o train_batch_size=0: must be >= 1, got 0"
    assert _stored_runs(db) == 1


def test_rerun_failed_refuses_a_stored_run_that_would_fail_again(tmp_path):
    """A run stored before values were checked (here: valid_metric not computed) is not
    retried: it names the run and the key, and leaves it as it was."""
    from ablate.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(spec_text(), encoding="utf-8")
    db = tmp_path / "r.db"
    store = Store(str(db))
    spec = load_spec(path)
    store.sync_experiment(spec, plan.expand(spec))
    with store.session() as s:
        run = s.get(Run, 1)
        run.config = {**run.config, "valid_metric": "MRR@10"}
        run.status = "failed"
    store.engine.dispose()
    res = CliRunner().invoke(app, ["rerun", "--failed", str(path), "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("ablate: error: run 1 (BPR): valid_metric: MRR@10 is not among") and res.stderr.count("\n") == 1
    store = Store(str(db), create=False)
    assert store.get_run(1).status == "failed"
    store.engine.dispose()


def test_quoted_numbers_are_read_as_recbole_reads_them():
    """RecBole's Config evaluates the strings of a config dict: "-2" is the layer index -2."""
    assert plan.expand(parse_spec(spec_text(params={"ot_z1": "'-2'", "ot_weight": "'1e-7'"})))


# ---------------------------------------------------------------------------- one place per model


@pytest.mark.parametrize("name", catalog.custom_models())
def test_every_key_of_our_models_has_a_rule_its_default_obeys(name):
    path = catalog.defaults_file(name)
    declared = model_rules.read(path)
    defaults = catalog.model_defaults(name)
    assert set(declared.rules) == set(defaults), "a key without a '# (type ...)' annotation"
    for key, value in defaults.items():
        assert declared.rules[key].problem(value, defaults) is None, key
    for check in declared.checks:
        assert check.problem(defaults) is None, check.expr


def test_every_recbole_model_s_own_defaults_pass_its_rules():
    """No false alarm on RecBole's own files: each model's defaults are a valid config."""
    wrong = {m: rules.problem(m, catalog.model_defaults(m)) for m in catalog.recbole_models()}
    assert {m: p for m, p in wrong.items() if p} == {}
    assert len(wrong) > 50


def test_lightgcn_ot_takes_its_defaults_and_choices_from_its_yaml():
    """The model reads the file the planner validates against: no second list to drift."""
    from models import lightgcn_ot

    declared = model_rules.read(catalog.defaults_file("LightGCNOT")).rules
    assert {"sample_adj", "ot_cost_shift", "ot_prune_scope"} <= set(lightgcn_ot._CHOICES)
    for key, allowed in lightgcn_ot._CHOICES.items():
        assert set(declared[key].choices) == set(allowed), key
    defaults = catalog.model_defaults("LightGCNOT")
    assert lightgcn_ot._DEFAULTS == {k: v for k, v in defaults.items() if k not in lightgcn_ot._BACKBONE}


def test_a_model_can_ask_its_own_rules_what_a_planner_would_refuse():
    declared = model_rules.read(catalog.defaults_file("LightGCNOT"))
    config = dict(catalog.model_defaults("LightGCNOT"))
    assert declared.problem(config) is None
    assert declared.problem({**config, "sample_adj": "B"}) == "sample_adj: expected one of A | A2 | cluster, got 'B'"
    assert declared.problem({**config, "k1": 0, "k2": 0}) == "k1 + k2 >= 1 does not hold (k1=0, k2=0)"


def test_relations_between_switches_read_strings_bools_and_or():
    declared = model_rules.read(catalog.defaults_file("LightGCNOT"))
    config = {**catalog.model_defaults("LightGCNOT"), "n_layers": 3}
    assert declared.problem({**config, "ot_normalize": False, "ot_cost": "cos"}) == (
        "ot_normalize or ot_cost == \"exp\" does not hold (ot_normalize=False, ot_cost='cos')")
    assert declared.problem({**config, "ot_normalize": "false", "ot_cost": "exp"}) is None  # as RecBole reads it
    assert declared.problem({**config, "ot_z1": [0, 1], "ot_z2": "gat"}) is None  # a list is not "gat"
    assert declared.problem({**config, "ot_z1": "gat", "ot_z2": "gat", "ot_gat_input": 2}) is None
    assert declared.problem({**config, "bpr_weight": 0, "reg_weight": 0, "ot_weight": 0}).startswith(
        "bpr_weight + reg_weight + ot_weight + proto_weight > 0 does not hold")


def test_a_check_reads_strings_bools_and_or_not():
    check = model_rules.parse_check('not (a == "x" and b) or c >= 2')
    assert check.names == ("a", "b", "c")
    assert check.problem({"a": "x", "b": True, "c": 1}) is not None
    assert check.problem({"a": "y", "b": True, "c": 1}) is None
    assert check.problem({"a": "x", "b": "true", "c": "3"}) is None
    assert check.problem({"a": "x", "c": 1}) is None  # a key the config lacks: not checked
    assert check.problem({"a": "x", "b": 2, "c": 1}) is None  # not a bool: not checked
    for bad in ("k1 + k2", "a < b < c", 'a == "x" or k1'):
        if bad.endswith("k1"):
            assert model_rules.parse_check(bad).problem({"a": "y", "k1": 1}) is None  # k1 is no bool
            continue
        with pytest.raises(ValueError, match="a check is"):
            model_rules.parse_check(bad)


def test_a_malformed_annotation_names_its_file_and_line(tmp_path):
    path = tmp_path / "M.yaml"
    path.write_text("a: 1   # (int >= 1)\nb: 2   # (int => 1) typo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:2: .*'=> 1'"):
        model_rules.read(path)


def test_metric_names_read_from_files_are_recbole_s():
    from recbole.evaluator import metric_types
    from recbole.utils import EvaluatorType

    read = catalog.recbole_metrics()
    assert set(read) == set(metric_types)
    assert {n for n, m in read.items() if m.value} == {n for n, t in metric_types.items() if t == EvaluatorType.VALUE}


def test_planning_stays_fast_and_torch_free():
    """52 runs planned in well under a second of the planner's own CPU time (measured: 0.02 s);
    CPU time, not wall-clock time, so that other processes on a busy machine do not count."""
    import subprocess
    import sys

    text = spec_text(extra="grid: {k1: [0, 1, 2, 3, 4], k2: [1, 2, 3, 4, 5]}\n").replace("seeds: [2020]", "seeds: [1, 2]")
    code = (
        "import sys, time\nfrom ablate import plan\nfrom ablate.spec import parse_spec\n"
        f"s = parse_spec({text!r})\n"
        "plan.expand(s)\nt = time.process_time(); runs = plan.expand(s); dt = time.process_time() - t\n"
        "print(len(runs), dt, 'torch' in sys.modules, 'recbole' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "52" and out[2:] == ["False", "False"]
    assert float(out[1]) < 1.0


# ---------------------------------------------------------------------------- properties

MODELS = ("LightGCNOT", "SimGCL", "XSimGCL", "LightGCN", "SGL", "NCL", "BPR")
# set by plan or checked together with other keys (tests above); paths are resolved, not ruled
SKIP = {"dataset", "data_path", "dataset_save_path", "dataloaders_save_path",
        "metrics", "valid_metric", "topk", "eval_args", "train_neg_sample_args", "n_layers"} | set(plan.OWNED)
SCALAR = {"int", "float", "bool", "str", "none"}


def _ruled_keys() -> list[tuple[str, str]]:
    out = []
    for model in MODELS:
        table = rules.rules_for(model).rules
        for key in sorted(set(catalog.model_defaults(model)) | set(rules.SETTINGS)):
            if key in table and key not in SKIP and set(table[key].types) <= SCALAR:
                out.append((model, key))
    return out


RULED = _ruled_keys()


def _env(model: str) -> dict:
    return {**catalog.recbole_defaults(), **catalog.model_defaults(model), "n_layers": 2}


def _limits(rule, env) -> tuple[float, float, bool, bool]:
    """(low, high, low excluded, high excluded), evaluating each bound with Python itself."""
    lo, hi, lo_open, hi_open = -math.inf, math.inf, False, False
    for op, text in rule.bounds:
        limit = eval(text, {}, dict(env))  # noqa: S307 - the test's own independent reading
        if op in (">", ">="):
            lo, lo_open = limit, op == ">"
        else:
            hi, hi_open = limit, op == "<"
    return lo, hi, lo_open, hi_open


WORD = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True).filter(lambda w: w not in ("true", "false"))


def _valid(rule, env) -> st.SearchStrategy:
    lo, hi, lo_open, hi_open = _limits(rule, env)
    options = []
    if "str" in rule.types:
        options.append(st.sampled_from(rule.choices) if rule.choices else WORD)
    if "int" in rule.types or "float" in rule.types:
        ilo = -10**6 if lo == -math.inf else math.floor(lo) + 1 if lo_open or lo != int(lo) else int(lo)
        ihi = 10**6 if hi == math.inf else math.ceil(hi) - 1 if hi_open or hi != int(hi) else int(hi)
        options.append(st.integers(ilo, ihi))
    if "float" in rule.types:
        options.append(st.floats(max(lo, -1e6), min(hi, 1e6), exclude_min=lo_open, exclude_max=hi_open, allow_nan=False))
    if "bool" in rule.types:
        options.append(st.booleans())
    return st.one_of(options)


def _invalid(rule, env) -> st.SearchStrategy | None:
    lo, hi, lo_open, hi_open = _limits(rule, env)
    options = []
    numeric = "int" in rule.types or "float" in rule.types
    if numeric and lo > -math.inf:
        options.append(st.just(lo) if lo_open else st.floats(lo - 100, lo, exclude_max=True) if "float" in rule.types
                       else st.integers(int(lo) - 100, math.ceil(lo) - 1))
    if numeric and hi < math.inf:
        options.append(st.just(hi) if hi_open else st.floats(hi, hi + 100, exclude_min=True) if "float" in rule.types
                       else st.integers(math.floor(hi) + 1, int(hi) + 100))
    if "int" in rule.types and "float" not in rule.types:
        options.append(st.floats(-100, 100).filter(lambda f: not f.is_integer()))
    if "str" not in rule.types:
        options.append(WORD.map(lambda w: w + "x"))
    elif rule.choices:
        options.append(WORD.filter(lambda w: w not in rule.choices))
    if "bool" in rule.types and not numeric:
        options.append(st.integers(2, 9))
    return st.one_of(options) if options else None  # (str), (str|none): every string is allowed


def _expand_with(model: str, key: str, value) -> str:
    params = {key: yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()}
    text = spec_text(params=params, model=model)
    plan.expand(parse_spec(text, "p.yaml"))
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from(RULED))
def test_any_value_inside_a_rule_passes(data, which):
    model, key = which
    value = data.draw(_valid(rules.rules_for(model).rules[key], _env(model)))
    _expand_with(model, key, value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from([r for r in RULED if _invalid(rules.rules_for(r[0]).rules[r[1]], _env(r[0])) is not None]))
def test_any_value_outside_a_rule_is_refused_at_its_line(data, which):
    model, key = which
    rule = rules.rules_for(model).rules[key]
    value = data.draw(_invalid(rule, _env(model)))
    with pytest.raises(SpecError) as err:
        _expand_with(model, key, value)
    msg = str(err.value)
    text = spec_text(params={key: "X"}, model=model)
    assert "\n" not in msg and msg.startswith(f"p.yaml:{line_of(text, key)}: variants.v.params.{key}: "), msg


@given(
    types=st.lists(st.sampled_from(["int", "float", "str", "bool", "none", "list[int]"]), min_size=1, max_size=3, unique=True),
    choices=st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,5}", fullmatch=True), max_size=4, unique=True),
    bounds=st.lists(st.tuples(st.sampled_from([">=", ">", "<=", "<"]), st.integers(-50, 50)), max_size=2),
)
def test_annotations_read_back_what_they_say(types, choices, bounds):
    text = "(" + "|".join(types) + (": " + " | ".join(choices) if choices else "")
    text += (", " if choices else " ") + ", ".join(f"{op} {n}" for op, n in bounds) if bounds else ""
    text += ")"
    rule = model_rules.parse(text)
    assert rule.types == tuple(types) and rule.choices == tuple(choices)
    assert rule.bounds == tuple((op, str(n)) for op, n in bounds)
    assert model_rules.parse(rule.expected()) == rule

"""What every value of a run's config may be, checked before any run.

Why here and not at run time: RecBole finds a bad value only after it has loaded the
data (``metrics: [Recal]``), sometimes after an epoch (``valid_metric: MRR@10`` with
``metrics: [Recall]``), and some it never finds (``epochs: -1`` stores an untrained
model as done; ``train_batch_size: 0`` spins forever). :func:`problem` finds them all
while the spec is expanded, without importing torch or RecBole.

Where a rule comes from, first match wins:

1. our models: the annotation opening each comment of their defaults YAML
   (``# (int >= 1)``, ``# (str: A | A2 | cluster)``; :mod:`models.rules` reads it);
2. RecBole's models: :data:`RECBOLE_MODELS` (what their property files cannot say);
3. RecBole's settings: :data:`SETTINGS`;
4. anything else: the type of its default (RecBole's ``overall.yaml`` and dataset
   defaults, or the model's YAML): an int default wants an int, a float any number, ...

plus what a per-key rule cannot say, in the ``_check_*`` functions: metric names (read
from RecBole's metric classes), ``valid_metric`` among ``metrics`` x ``topk``,
``eval_args`` and ``train_neg_sample_args``. Rules are written in the annotation
language of :mod:`models.rules`, so there is one way to state a rule.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from models import rules as model_rules
from models.rules import Rule, as_recbole_reads, parse

from ablate import catalog

# RecBole's settings, where its defaults tell only the type. Ranges follow what RecBole
# does with the value: eval_step 0 never validates, stopping_step 0 stops at the first
# epoch without progress; learner and state are compared lower-cased.
SETTINGS: dict[str, str] = {
    "epochs": "(int >= 1)",
    "train_batch_size": "(int >= 1)",
    "eval_batch_size": "(int >= 1)",
    "learning_rate": "(float > 0)",
    "weight_decay": "(float >= 0)",
    "stopping_step": "(int >= 0)",
    "eval_step": "(int >= 0)",
    "worker": "(int >= 0)",
    "seed": "(int)",
    "gpu_id": "(str|int)",
    "loss_decimal_place": "(int >= 0)",
    "metric_decimal_place": "(int >= 0)",
    "topk": "(int|list[int] >= 1)",
    "metrics": "(str|list[str])",
    "valid_metric": "(str)",
    "eval_args": "(dict)",
    "train_neg_sample_args": "(dict|none)",
    "clip_grad_norm": "(dict|none)",
    "learner": "(str: adam | adamw | sgd | adagrad | rmsprop | sparse_adam)",
    "state": "(str|none: info | debug | warning | error | critical)",
    "transform": "(str|none)",
    "MAX_ITEM_LIST_LENGTH": "(int >= 1)",
    "dataset": "(str)",
    "fast_path": "(bool)",
}
_FOLD_CASE = {"learner", "state"}

# RecBole's models: ranges and choices their property YAMLs cannot say (types come from
# the defaults there). "*" applies to every RecBole model.
RECBOLE_MODELS: dict[str, dict[str, str]] = {
    "*": {"embedding_size": "(int >= 1)"},
    "BPR": {},
    "LightGCN": {"n_layers": "(int >= 0)", "reg_weight": "(float >= 0)"},
    "SGL": {
        "type": "(str: ED | ND | RW)", "n_layers": "(int >= 1)", "ssl_tau": "(float > 0)",
        "reg_weight": "(float >= 0)", "ssl_weight": "(float >= 0)", "drop_ratio": "(float >= 0, < 1)",
    },
    "NCL": {
        "n_layers": "(int >= 1)", "reg_weight": "(float >= 0)", "ssl_temp": "(float > 0)",
        "ssl_reg": "(float >= 0)", "hyper_layers": "(int >= 0)", "alpha": "(float >= 0)",
        "proto_reg": "(float >= 0)", "num_clusters": "(int >= 1)", "m_step": "(int >= 1)",
        "warm_up_step": "(int >= 0)",
    },
}

_SPLITS = ("RS", "LS", "TS")
_LS_MODES = ("valid_and_test", "valid_only", "test_only")


@dataclass(frozen=True)
class Problem:
    """What is wrong with a run's config. ``keys``: the settings involved, the one to blame
    first (the caller points at the first the spec itself sets); ``path``: the place inside
    the first key's value (``("split", "RS")`` of ``eval_args``)."""

    keys: tuple[str, ...]
    message: str
    path: tuple = ()


@lru_cache(maxsize=None)
def rules_for(model: str) -> model_rules.Rules:
    """Every rule a run of ``model`` is held to, by key (see the module docstring)."""
    out: dict[str, Rule] = {}
    # 4. the type of a default: RecBole's, then the model's own (which may differ)
    for defaults in (catalog.recbole_defaults(), catalog.model_defaults(model)):
        for key, value in defaults.items():
            rule = model_rules.from_default(value)
            if rule is not None:
                out[key] = rule
    # 3. RecBole's settings; a model's default for one of them leaves its range in force
    out.update({k: parse(t, fold_case=k in _FOLD_CASE) for k, t in SETTINGS.items()})
    checks: tuple = ()
    if catalog.is_custom(model):  # 1. our models' annotations
        path = catalog.defaults_file(model)
        declared = model_rules.read(path) if path else model_rules.Rules({})
        out.update(declared.rules)
        checks = declared.checks
    else:  # 2. RecBole's models
        table = {**RECBOLE_MODELS["*"], **RECBOLE_MODELS.get(model, {})}
        out.update({k: parse(t) for k, t in table.items()})
    return model_rules.Rules(out, checks)


def problem(model: str, config: Mapping[str, Any]) -> Problem | None:
    """The first thing wrong with ``config`` (a run of ``model``), or None. Keys are
    checked in the config's order, then the relations between them."""
    rules = rules_for(model)
    effective = {**catalog.recbole_defaults(), **config}
    for key, value in config.items():
        rule = rules.rules.get(key)
        if rule is None:
            continue
        msg = rule.problem(value, effective)
        if msg:
            return Problem((key,), msg)
    for check in _CHECKS:
        found = check(config, effective)
        if found:
            return found
    for check in rules.checks:
        msg = check.problem(effective)
        if msg:
            return Problem(check.names, msg)
    return None


# ---------------------------------------------------------------------------- checks


def _as_list(value: Any) -> list:
    value = as_recbole_reads(value)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_metrics(config: Mapping, eff: Mapping) -> Problem | None:
    known = catalog.recbole_metrics()
    kinds = set()
    for name in _as_list(eff["metrics"]):
        if not isinstance(name, str) or name.lower() not in known:
            names = [m.name for m in known.values()]
            hint = difflib.get_close_matches(str(name), names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            return Problem(("metrics",), f"RecBole has no metric {name!r}{extra}; it has {', '.join(names)}")
        kinds.add(known[name.lower()].value)
    if len(kinds) > 1:
        return Problem(("metrics",), "ranking metrics and value metrics (AUC, MAE, RMSE, LogLoss) cannot be mixed")
    return None


def _valid_metric_names(eff: Mapping) -> list[str]:
    """The result names RecBole computes and ``valid_metric`` is looked up in (lower case)."""
    known = catalog.recbole_metrics()
    out = []
    for name in _as_list(eff["metrics"]):
        metric = known[name.lower()]
        out += [f"{name.lower()}@{k}" for k in _as_list(eff["topk"])] if metric.topk else [name.lower()]
    return out


def _check_valid_metric(config: Mapping, eff: Mapping) -> Problem | None:
    valid = as_recbole_reads(eff["valid_metric"])
    if not isinstance(valid, str):
        return None  # its own rule says so
    names = _valid_metric_names(eff)
    if valid.lower() in names:
        return None
    # set in the spec: its own line is blamed; else RecBole's default is, at metrics/topk
    what = f"{valid}" if "valid_metric" in config else f"valid_metric {valid} (RecBole's default)"
    return Problem(
        ("valid_metric", "metrics", "topk"),
        f"{what} is not among what the run computes ({', '.join(names)}); RecBole would fail after the first epoch",
    )


def _check_eval_args(config: Mapping, eff: Mapping) -> Problem | None:
    args = as_recbole_reads(eff["eval_args"])
    if not isinstance(args, dict):
        return None
    bad = sorted(set(args) - {"split", "order", "group_by", "mode"})
    if bad:
        return Problem(("eval_args",), f"unknown key {bad[0]!r} (allowed: group_by, mode, order, split)", (bad[0],))
    split = args.get("split", {"RS": [0.8, 0.1, 0.1]})
    if not isinstance(split, dict) or len(split) != 1 or next(iter(split)) not in _SPLITS:
        return Problem(("eval_args",), f"split must be one of {{RS: [train, valid, test]}}, {{LS: ...}}, {{TS: [...]}}, got {split!r}", ("split",))
    how, ratios = next(iter(split.items()))
    if how == "LS":
        if ratios not in _LS_MODES:
            return Problem(("eval_args",), f"split LS must be one of {' | '.join(_LS_MODES)}, got {ratios!r}", ("split", how))
    else:
        ok = (isinstance(ratios, list) and len(ratios) == 3
              and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in ratios))
        if not ok:
            return Problem(("eval_args",), f"split {how} must be three ratios > 0 (train, valid, test), got {ratios!r}", ("split", how))
        if abs(sum(ratios) - 1) > 1e-6:
            return Problem(("eval_args",), f"split {how} ratios must sum to 1, got {ratios!r} (sum {sum(ratios):g})", ("split", how))
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("order", lambda v: v in ("RO", "TO"), "RO | TO"),
        ("group_by", lambda v: v is None or (isinstance(v, str) and v.lower() in ("user", "none")), "user | none"),
    ]
    for key, ok, allowed in checks:
        if key in args and not ok(args[key]):
            return Problem(("eval_args",), f"{key} must be {allowed}, got {args[key]!r}", (key,))
    mode = args.get("mode", "full")
    phases = mode if isinstance(mode, dict) else {"valid": mode, "test": mode}
    for phase, m in phases.items():
        path = ("mode", phase) if isinstance(mode, dict) else ("mode",)
        if phase not in ("valid", "test"):
            return Problem(("eval_args",), f"mode has phases valid and test, got {phase!r}", path)
        if not (isinstance(m, str) and (m in ("full", "labeled") or (m[:3] in ("uni", "pop") and m[3:].isdigit() and int(m[3:]) > 0))):
            return Problem(("eval_args",), f"mode must be full | labeled | uniN | popN (N > 0), got {m!r}", path)
    value_metrics = any(catalog.recbole_metrics()[n.lower()].value for n in _as_list(eff["metrics"]))
    if value_metrics and "full" in phases.values():
        return Problem(("eval_args", "metrics"), "value metrics (AUC, MAE, RMSE, LogLoss) cannot be used with mode full", ("mode",))
    return None


def _check_train_neg(config: Mapping, eff: Mapping) -> Problem | None:
    args = as_recbole_reads(eff["train_neg_sample_args"])
    if not isinstance(args, dict):
        return None
    allowed = {
        "distribution": parse("(str|none: uniform | popularity | none)"),
        "sample_num": parse("(int >= 1)"),
        "alpha": parse("(float)"),
        "dynamic": parse("(bool)"),
        "candidate_num": parse("(int >= 0)"),
    }
    for key, value in args.items():
        if key not in allowed:
            return Problem(("train_neg_sample_args",), f"unknown key {key!r} (allowed: {', '.join(allowed)})", (key,))
        msg = allowed[key].problem(value)
        if msg:
            return Problem(("train_neg_sample_args",), f"{key}: {msg}", (key,))
    return None


# In order: a wrong metric name first, so valid_metric's message can list the real ones.
_CHECKS = (_check_metrics, _check_valid_metric, _check_eval_args, _check_train_neg)

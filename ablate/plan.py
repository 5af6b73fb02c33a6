"""Expand a spec into the runs it asks for: variants x grid x zip x seeds.

This is the one place a run's identity is decided. A run's ``key`` is a hash of its
resolved config — the model's own defaults, the spec's base, the variant's chain of
``extends``, the grid point, command-line overrides and the seed — leaving out
run-local settings (paths, devices, progress bars). Everything downstream (skipping
finished runs, sharing a run between two specs, grouping seeds into one table row,
``rerun``) uses that key and never recomputes it.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import catalog, data, rules, versions
from ablate.errors import SpecError, UsageError
from ablate.spec import ExperimentSpec, VariantSpec, line_in

# Settings that say *where* or *how visibly* a run happens, not *what* it computes.
LOCAL_KEYS = frozenset({
    "data_path", "checkpoint_dir", "gpu_id", "use_gpu", "device", "show_progress", "state",
    "log_wandb", "wandb_project", "worker", "save_dataset", "dataset_save_path",
    "save_dataloaders", "dataloaders_save_path", "nproc", "world_size", "offset", "ip",
    "port", "local_rank", "verbose",
    # how LightGCNOT computes, not what: the same numbers to float32 noise (tests/models)
    "ot_solver", "ot_compile",
    # how an epoch is driven, not what it computes: the same numbers bit for bit (tests/perf)
    "fast_path",
})
# Config values that are file system paths; relative ones are taken from the spec's folder.
PATH_KEYS = frozenset({"data_path", "dataset_save_path", "dataloaders_save_path"})
# Settings ablate gives every run itself (plan: model, seed; the worker: the rest, over
# whatever the config says; RecBole derives device from gpu_id). A spec, -o or a search
# space that sets one is refused, naming what sets it, instead of being overruled quietly.
_BY_SCHEDULER = "ablate run for each run: --gpus, --per-gpu, --cpu"
OWNED = {
    "model": "each row's model:",
    "seed": "the spec's seeds: list",
    "gpu_id": _BY_SCHEDULER,
    "use_gpu": _BY_SCHEDULER,
    "device": _BY_SCHEDULER,
    "checkpoint_dir": "ablate for each run: its folder under --workdir",
    "show_progress": "ablate: its live view or --log-every lines show progress",
    "state": "ablate: each run logs at INFO to its run.log",
}


def owned(key: str) -> str:
    """The one-line refusal of an :data:`OWNED` setting, naming what sets it."""
    return f"{key} is set by {OWNED[key]}"


@dataclass(frozen=True)
class RunSpec:
    """One run to execute. ``config`` is exactly what the worker hands to RecBole."""

    key: str
    name: str  # the table row this run belongs to (seeds share it)
    variant: str
    role: str  # "baseline" | "variant"
    model: str
    seed: int
    config: dict[str, Any]
    point: dict[str, Any] = field(default_factory=dict)  # the grid/zip values of this run
    position: int = 0  # declaration order, used for table row order


def run_key(config: dict[str, Any]) -> str:
    """Stable 16-hex key of a resolved config, run-local settings left out, and of the
    implementation of its model (:mod:`ablate.versions`): after a change to a model's
    numbers, the same config names a new run instead of finding the old code's. Settings a
    model gained later are left out where they hold their default (:func:`ablate.versions.
    unkeyed`), so a new switch changes no stored run's key."""
    unkeyed = versions.unkeyed(config)
    ident = {k: v for k, v in config.items() if k not in LOCAL_KEYS and k not in unkeyed}
    ident.update(versions.key_part(config.get("model")))
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compact(value: Any) -> str:
    """Short text for a value in a run name: 1e-07 -> '1e-7', 0.60 -> '0.6'."""
    if isinstance(value, float):
        text = f"{value:g}"
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant}e{int(exp)}"
        return text
    if isinstance(value, (list, tuple)):
        return "-".join(compact(v) for v in value)
    return str(value)


class _NameValue:
    """Wraps a value for ``str.format``: empty format spec gives the compact form."""

    def __init__(self, value):
        self.value = value

    def __format__(self, spec):
        return compact(self.value) if not spec else format(self.value, spec)

    def __str__(self):
        return compact(self.value)


def _variant_chain(spec: ExperimentSpec, name: str) -> list[VariantSpec]:
    rows = spec.rows()
    chain, seen, cur = [], [], name
    while cur is not None:
        if cur in seen:
            loop = " -> ".join([*seen, cur])
            raise SpecError(spec.path, f"{rows[name][0]}s.{name}.extends: cycle {loop}")
        if cur not in rows:
            hint = difflib.get_close_matches(cur, rows, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpecError(spec.path, f"{rows[seen[-1]][0]}s.{seen[-1]}.extends: unknown variant {cur!r}{extra}")
        seen.append(cur)
        chain.append(rows[cur][1])
        cur = rows[cur][1].extends
    return chain[::-1]  # root first


def _merged(chain: list[VariantSpec]) -> tuple[str | None, dict, dict | None, list | None, str | None]:
    """Fold a chain of ``extends`` (root first). Params accumulate; a declared ``grid`` or
    ``zip`` *replaces* what came before (``zip: []`` clears it), and ``None`` means "not
    declared anywhere in the chain: use the spec's top-level one"."""
    model, params, grid, zips, template = None, {}, None, None, None
    for v in chain:
        model = v.model or model
        params.update(v.params)
        if "grid" in v.model_fields_set:
            grid = dict(v.grid)
        if "zip" in v.model_fields_set:
            zips = list(v.zip)
        template = v.run_name or template
    return model, params, grid, zips, template


def _resolve_paths(config: dict, base_dir: Path, where: str = "<spec>") -> None:
    for key in PATH_KEYS & config.keys():
        value = config[key]
        if value is None:
            continue
        if not isinstance(value, str) or "\0" in value:
            raise SpecError(where, f"{key} must be a folder path, got {type(value).__name__} {str(value)[:60]!r}")
        if value and not Path(value).expanduser().is_absolute():
            config[key] = str((base_dir / value).resolve())
        else:
            config[key] = str(Path(value).expanduser())


def _resolve_dataset(config: dict, where: str, check_files: bool) -> None:
    dataset, data_path = config.get("dataset"), config.get("data_path")
    if not dataset:
        raise SpecError(where, "base.dataset is required (e.g. dataset: ml-100k)")
    if not isinstance(dataset, str) or "/" in dataset or "\0" in dataset:
        raise SpecError(where, f"dataset must be a dataset name, got {type(dataset).__name__} {str(dataset)[:60]!r}")
    folder = data.locate(dataset, data_path)  # data_path, the recbole wheel, then the data home
    if folder is not None:
        config["data_path"] = str(folder)
        if check_files:
            try:
                data.drop_applied_filters(config, folder)
            except ValueError as err:
                raise SpecError(where, str(err)) from None
        return
    if not check_files:
        config["data_path"] = data_path or str(data.home())
        return
    raise SpecError(where, data.missing_message(dataset, Path(data_path) if data_path else data.home()))


def _expand_points(grid: dict[str, list], zips: list[dict[str, list]], where: str, ctx: str) -> list[dict]:
    axes: list[list[dict]] = []
    for axis, values in grid.items():
        if not values:
            raise SpecError(where, f"{ctx}grid.{axis} is empty: the expansion has no runs")
        axes.append([{axis: v} for v in values])
    for i, group in enumerate(zips):
        if not group:
            raise SpecError(where, f"{ctx}zip[{i}] is empty")
        lengths = {k: len(v) for k, v in group.items()}
        if len(set(lengths.values())) != 1:
            desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise SpecError(where, f"{ctx}zip[{i}]: lists must have equal length, got {desc}")
        if 0 in lengths.values():
            raise SpecError(where, f"{ctx}zip[{i}] is empty: the expansion has no runs")
        n = next(iter(lengths.values()))
        axes.append([{k: group[k][j] for k in group} for j in range(n)])
    points = []
    for combo in itertools.product(*axes):
        point: dict = {}
        for part in combo:
            clash = point.keys() & part.keys()
            if clash:
                raise SpecError(where, f"{ctx}parameter {sorted(clash)[0]!r} appears in two grid/zip axes")
            point.update(part)
        points.append(point)
    return points


def _render_name(template: str | None, variant: str, model: str, point: dict, config: dict, where: str) -> str:
    if template is None:
        if not point:
            return variant
        return variant + "_" + "_".join(f"{compact(v)}{k}" for k, v in point.items())
    values = {k: _NameValue(v) for k, v in config.items()}
    values.update({k: _NameValue(v) for k, v in point.items()})
    values.update(variant=variant, model=model)
    try:
        return string.Formatter().vformat(template, (), values)
    except KeyError as err:
        raise SpecError(where, f"run_name {template!r}: unknown field {{{err.args[0]}}}") from None
    except (ValueError, IndexError) as err:
        raise SpecError(where, f"run_name {template!r}: {err}") from None


def _places(spec: ExperimentSpec, row_name: str) -> dict[str, tuple[tuple, list | None]]:
    """Where in the spec each key of a row's runs is set last: the base, then the params of
    its ``extends`` chain (root first), then the grid/zip it expands (with that axis's
    values). Mirrors :func:`_merged`; only error messages use it, to name a line."""
    rows = spec.rows()
    names, cur = [], row_name
    while cur is not None and cur in rows and cur not in names:  # _variant_chain refused cycles
        names.append(cur)
        cur = rows[cur][1].extends
    places: dict[str, tuple[tuple, list | None]] = {k: (("base", k), None) for k in spec.base}
    grid = zips = None
    for name in reversed(names):
        role, v = rows[name]
        at = (f"{role}s", name)
        places.update({k: ((*at, "params", k), None) for k in v.params})
        if "grid" in v.model_fields_set:
            grid = (at, v.grid)
        if "zip" in v.model_fields_set:
            zips = (at, v.zip)
    if rows[row_name][0] == "variant":
        grid, zips = grid or ((), spec.grid), zips or ((), spec.zip)
    if grid:
        places.update({k: ((*grid[0], "grid", k), values) for k, values in grid[1].items()})
    if zips:
        for i, group in enumerate(zips[1]):
            places.update({k: ((*zips[0], "zip", i, k), values) for k, values in group.items()})
    return places


def _fail_at(spec: ExperimentSpec, places: dict, overrides: dict, row: str, keys: tuple[str, ...],
             value: Any, message: str, path: tuple = ()) -> SpecError:
    """A SpecError at the line that set the first of ``keys`` the spec (or ``-o``) sets,
    naming that place (``base.epochs``) and, when it is not the row's own, the row.
    ``value``: that key's value in the run (picks the item of a grid axis); ``path``: the
    place inside it, used when the blamed key is ``keys[0]``."""
    key = next((k for k in keys if k in overrides or k in places), keys[0])
    if key in overrides:
        return SpecError(spec.path, f"-o {key}={overrides[key]!r}: {message} ({row})")
    if key not in places:
        return SpecError(spec.path, f"{row}: {key}: {message}")
    loc, values = places[key]
    if values is not None and value in values:
        loc = (*loc, values.index(value))
    inner = path if key == keys[0] else ()
    dotted = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in (*loc, *inner)).replace(".[", "[")
    line = line_in(spec, (*loc, *inner)) or line_in(spec, loc)
    suffix = "" if dotted.startswith(row + ".") else f" ({row})"
    return SpecError(spec.path, f"{dotted}: {message}{suffix}", line)


def _check_params(spec: ExperimentSpec, model: str, config: dict, row: str, places: dict, overrides: dict) -> None:
    known = catalog.known_params(model)
    for key in config:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _fail_at(
                spec, places, overrides, row, (key,), config[key],
                f"unknown parameter {key!r} for model {model}{extra}; set `check_params: false` in the spec to allow it",
            )


def _check_values(spec: ExperimentSpec, model: str, config: dict, row: str, places: dict, overrides: dict) -> None:
    """Every value of a run's config against its rules (:mod:`ablate.rules`), so that a bad
    one stops the sweep here, at its line, instead of failing each run after its data loads."""
    found = rules.problem(model, config)
    if found is not None:
        key = next((k for k in found.keys if k in overrides or k in places), found.keys[0])
        raise _fail_at(spec, places, overrides, row, found.keys, config.get(key), found.message, found.path)


def check_variation(model: str, config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A stored run's config varied by ``-o`` (``ablate rerun ID -o ...``), held to the same
    rules as a spec's runs before it is stored. Raises UsageError naming the ``-o`` key."""
    for key in OWNED.keys() & overrides.keys():
        who = "--seed" if key == "seed" else OWNED[key]
        raise UsageError(f"-o {key}={overrides[key]!r}: {key} is set by {who}, not by -o")
    found = rules.problem(model, config)
    if found is not None:
        key = next((k for k in found.keys if k in overrides), found.keys[0])
        where = f"-o {key}={overrides[key]!r}" if key in overrides else key
        raise UsageError(f"{where}: {found.message}")


def check_stored(model: str, config: dict[str, Any], label: str) -> None:
    """A stored run about to be retried (``ablate rerun --failed``), held to today's rules:
    one stored before they existed (``valid_metric`` not computed) would only fail again."""
    found = rules.problem(model, config)
    if found is not None:
        raise UsageError(f"{label}: {found.keys[0]}: {found.message}; it would fail again: fix the spec and `ablate run` it")


def expand(spec: ExperimentSpec, overrides: dict[str, Any] | None = None, check_files: bool = True) -> list[RunSpec]:
    """All runs of a spec, in declaration order. Raises SpecError before anything runs."""
    where = spec.path
    base_dir = Path(spec.path).resolve().parent if spec.path != "<string>" else Path.cwd()
    overrides = dict(overrides or {})
    rows = spec.rows()
    if not rows:
        raise SpecError(where, "the spec declares no baselines and no variants: the expansion has no runs")

    for key in OWNED.keys() & overrides.keys():
        raise SpecError(where, f"-o {key}={overrides[key]!r}: {owned(key)}")
    runs: list[RunSpec] = []
    by_name: dict[tuple[str, int], RunSpec] = {}
    for row_name, (role, _) in rows.items():
        model, params, grid, zips, template = _merged(_variant_chain(spec, row_name))
        ctx = f"{role}s.{row_name}."
        if role == "variant":
            grid = spec.grid if grid is None else grid
            zips = spec.zip if zips is None else zips
            template = template or spec.run_name
        grid, zips = grid or {}, zips or []
        if not model:
            raise SpecError(where, f"{ctx[:-1]}: no model (set `model:` or `extends:` a row that has one)")
        if not catalog.exists(model):
            hint = difflib.get_close_matches(model, catalog.model_names(), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpecError(where, f"{ctx}model: unknown model {model!r}{extra}")
        places = _places(spec, row_name)
        for key in OWNED:
            if key in places:
                raise _fail_at(spec, places, {}, ctx[:-1], (key,), None, owned(key))
        for point in _expand_points(grid, zips, where, ctx):
            for seed in spec.seeds:
                config = dict(catalog.model_defaults(model))
                config.update(spec.base)
                _resolve_paths(config, base_dir, where)
                config.update(params)
                config.update(point)
                _resolve_paths(config, base_dir, where)
                over = dict(overrides)
                _resolve_paths(over, Path.cwd(), where)
                config.update(over)
                config.update(model=model, seed=seed)
                _resolve_dataset(config, where, check_files)
                if spec.check_params:
                    _check_params(spec, model, config, ctx[:-1], places, over)
                for k, v in config.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        raise SpecError(where, f"{ctx[:-1]}: parameter {k!r} is {v}")
                _check_values(spec, model, config, ctx[:-1], places, over)
                name = _render_name(template, row_name, model, point, config, where)
                run = RunSpec(
                    key=run_key(config), name=name, variant=row_name, role=role, model=model,
                    seed=seed, config=config, point=point, position=len(runs),
                )
                other = by_name.get((name, seed))
                if other is not None and other.key != run.key:
                    raise SpecError(
                        where,
                        f"run name {name!r} is given to two different configs ({other.variant} and {row_name}); "
                        "put the parameter that differs into run_name",
                    )
                by_name[(name, seed)] = run
                runs.append(run)
    return runs


def duplicates(runs: list[RunSpec]) -> list[tuple[str, str]]:
    """Pairs of differently named rows that resolve to the same config (same key)."""
    first: dict[str, str] = {}
    pairs = []
    for run in runs:
        prev = first.setdefault(run.key, run.name)
        if prev != run.name and (prev, run.name) not in pairs:
            pairs.append((prev, run.name))
    return pairs


def experiment_name(spec: ExperimentSpec, overrides: dict[str, Any] | None) -> str:
    """The store's name for this spec: its name, plus the overrides when there are any,
    so a smoke test with ``-o dataset=ml-100k`` never rewrites the real experiment."""
    if not overrides:
        return spec.name
    return spec.name + "[" + ",".join(f"{k}={compact(v)}" for k, v in sorted(overrides.items())) + "]"

"""Read and validate an experiment spec (YAML) into an :class:`ExperimentSpec`.

A spec declares what to compare; ``ablate.plan`` turns it into runs. Everything that
can be wrong with a spec is found here or in ``plan`` *before* any run starts, and is
reported as one :class:`~ablate.errors.SpecError` line naming the file and the line
(or the dotted place) of the mistake.

Shape of a spec::

    name: sampling                 # experiment name (default: the file's stem)
    description: k1 x k2 sampling
    base: {dataset: ml-1m, data_path: ../data, epochs: 300}   # RecBole config for all runs
    seeds: [2020, 2021]
    baselines:
      LightGCN: {model: LightGCN}
    variants:
      default: {model: LightGCNOT, params: {ot_weight: 1.0e-7}}
      only_wd: {extends: default, params: {ot_distance: wd}}
    grid: {k1: [0, 3], k2: [2, 30]}         # product, applied to every variant
    zip: [{sample_adj: [A, A2], subg1_adj: [A, A2]}]   # lock-step groups
    run_name: "{variant}_{k1}k1_{k2}k2"
    search:                                 # ablate search: tune one variant with Optuna
      variant: default
      space: {ot_weight: {loguniform: [1.0e-8, 1.0e-5]}, k2: {int: [1, 30]}}
      objective: {metric: ndcg@10, direction: maximize}
      trials: 40
      sampler: {kind: tpe, seed: 0}
      pruner: {kind: median, startup_trials: 5}

YAML is loaded with a *safe* loader (no object tags) that also reads ``1e-7`` as a
float, as RecBole does; PyYAML alone would read it as the string "1e-7".
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ablate.errors import SpecError

# ---------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-7`` as a float (YAML 1.1 wants a dot)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _no_duplicate_keys(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_yaml(text: str, path: str | Path = "<string>") -> Any:
    """Parse YAML safely; a syntax error becomes a one-line SpecError with its line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        what = (err.problem or err.context or "invalid YAML").strip()
        raise SpecError(path, f"YAML syntax error: {what}", line) from None
    except yaml.YAMLError as err:
        raise SpecError(path, f"YAML error: {str(err).splitlines()[0]}") from None


def parse_scalar(text: str) -> Any:
    """Parse a ``-o key=value`` value the way the spec would (``1e-7`` -> float)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Best line number for a dotted place in a composed YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(part)), None)
            if nxt is None:
                key = next((k for k, _ in node.value if k.value == str(part)), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


@lru_cache(maxsize=16)
def _composed(text: str) -> yaml.Node | None:
    return yaml.compose(text, Loader=_Loader)


def line_in(spec: "ExperimentSpec", loc: tuple) -> int | None:
    """The line of a dotted place (``("base", "epochs")``) in the spec's own text, so that a
    mistake found after parsing (a value, a name) is still reported at its line."""
    if not spec.source or not loc:
        return None
    try:
        return _line_of(_composed(spec.source), loc)
    except yaml.YAMLError:
        return None


# ---------------------------------------------------------------------------- models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Axis = list[Any]


class VariantSpec(_Strict):
    """One named row of the comparison: a model plus its overrides."""

    model: str | None = None
    extends: str | None = None
    description: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Axis] = Field(default_factory=dict)
    zip: list[dict[str, Axis]] = Field(default_factory=list)
    run_name: str | None = None


class Dimension(_Strict):
    """One searched parameter: exactly one of ``loguniform: [low, high]``,
    ``uniform: [low, high]``, ``int: [low, high]`` (both ends included) or
    ``choice: [a, b, ...]``. ``step`` quantises ``uniform`` and ``int``."""

    loguniform: list[float] | None = None
    uniform: list[float] | None = None
    int_: list[int] | None = Field(default=None, alias="int")
    choice: list[Any] | None = None
    step: float | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in ("loguniform", "uniform", "int_", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, int, choice")
        kind = given[0]
        values = getattr(self, kind)
        if kind == "choice":
            if not values:
                raise ValueError("choice must list at least one value")
            if self.step is not None:
                raise ValueError("step is for uniform and int")
            return self
        if len(values) != 2:
            raise ValueError(f"{kind.rstrip('_')} expects [low, high], got {len(values)} value(s)")
        low, high = values
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError(f"{kind.rstrip('_')} expects finite low < high, got [{low:g}, {high:g}]")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform expects low > 0, got {low:g}")
        if self.step is not None and (kind == "loguniform" or self.step <= 0):
            raise ValueError("step must be > 0, and is for uniform and int")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("loguniform", "uniform", "int", "choice") if getattr(self, k.replace("int", "int_")) is not None)

    @property
    def values(self) -> list[Any]:
        """[low, high] of a range, or the choices: the values whose configs are checked."""
        return list(getattr(self, self.kind.replace("int", "int_")))

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Objective(_Strict):
    """What a trial is scored by: a valid metric (its best epoch's value) and the direction."""

    metric: str | None = None  # default: the runs' valid_metric
    direction: str = "maximize"

    @field_validator("direction")
    @classmethod
    def _direction_ok(cls, v):
        if v not in ("maximize", "minimize"):
            raise ValueError(f"must be maximize or minimize, got {v!r}")
        return v


class Sampler(_Strict):
    kind: str = "tpe"
    seed: int | None = None
    startup_trials: int = Field(default=10, ge=0)  # random trials before TPE models the space

    @field_validator("kind")
    @classmethod
    def _kind_ok(cls, v):
        if v not in ("tpe", "random"):
            raise ValueError(f"must be tpe or random, got {v!r}")
        return v


class Pruner(_Strict):
    """Stops a trial after an epoch whose valid score says it will not win. ``median``:
    worse than the median of earlier trials at that epoch (after ``startup_trials``
    finished trials and ``warmup_epochs`` epochs); ``halving``: successive halving from
    epoch ``warmup_epochs`` on, keeping 1/``reduction_factor`` at each rung."""

    kind: str = "median"
    startup_trials: int = Field(default=5, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)
    reduction_factor: int = Field(default=3, ge=2)

    @field_validator("kind")
    @classmethod
    def _kind_ok(cls, v):
        if v not in ("median", "halving", "none"):
            raise ValueError(f"must be median, halving or none, got {v!r}")
        return v


def _kind_only(value):
    """``sampler: random`` is short for ``sampler: {kind: random}`` (and so for pruner)."""
    return {"kind": value} if isinstance(value, str) else value


class SearchSpec(_Strict):
    """``ablate search``: which row is tuned, over what space, scored how, for how long."""

    variant: str | None = None  # default: the spec's first variant
    space: dict[str, Dimension]
    objective: Objective = Field(default_factory=Objective)
    trials: int = Field(default=20, ge=1)
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner = Field(default_factory=Pruner)

    @field_validator("space")
    @classmethod
    def _space_not_empty(cls, v):
        if not v:
            raise ValueError("must name at least one parameter")
        return v

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_short(cls, v):
        return {"metric": v} if isinstance(v, str) else v

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _short(cls, v):
        return _kind_only(v)


class ExperimentSpec(_Strict):
    """A validated spec. ``path`` and ``source`` are filled in by :func:`load_spec`."""

    name: str
    description: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [2020])
    baselines: dict[str, VariantSpec] = Field(default_factory=dict)
    variants: dict[str, VariantSpec] = Field(default_factory=dict)
    grid: dict[str, Axis] = Field(default_factory=dict)
    zip: list[dict[str, Axis]] = Field(default_factory=list)
    run_name: str | None = None
    search: SearchSpec | None = None
    check_params: bool = True
    path: str = "<string>"
    source: str = ""

    @field_validator("seeds")
    @classmethod
    def _seeds_not_empty(cls, v):
        if not v:
            raise ValueError("must list at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("lists a seed twice")
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", v or ""):
            raise ValueError("must be letters, digits, '_', '.', '+' or '-'")
        return v

    def rows(self) -> dict[str, tuple[str, VariantSpec]]:
        """Baselines then variants, in declared order, with their role."""
        out = {name: ("baseline", v) for name, v in self.baselines.items()}
        out.update({name: ("variant", v) for name, v in self.variants.items()})
        return out


def _model_at(loc: tuple) -> type[BaseModel]:
    """The model that validates the mapping at ``loc`` (for its list of allowed keys)."""
    if not loc:
        return ExperimentSpec
    if loc[0] != "search":
        return VariantSpec
    if len(loc) >= 3 and loc[1] == "space":
        return Dimension
    nested = {"objective": Objective, "sampler": Sampler, "pruner": Pruner}
    return nested.get(loc[1], SearchSpec) if len(loc) > 1 else SearchSpec


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _model_at(err["loc"][:-1])
        keys = sorted((f.alias or k) for k, f in allowed.model_fields.items() if k not in {"path", "source"})
        return f"{loc}: unknown key {err['loc'][-1]!r} (allowed: {', '.join(keys)})"
    if kind == "list_type":
        got = type(err.get("input")).__name__
        return f"{loc}: must be a list of values, got {got} {err.get('input')!r}"
    if kind in ("dict_type", "model_type"):
        return f"{loc}: must be a mapping, got {type(err.get('input')).__name__}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}"


def parse_spec(text: str, path: str | Path = "<string>") -> ExperimentSpec:
    """Parse and validate spec text. Raises SpecError with file and line."""
    data = load_yaml(text, path)
    if data is None:
        raise SpecError(path, "the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(path, f"a spec must be a mapping at the top level, got {type(data).__name__}")
    data.setdefault("name", Path(str(path)).stem)
    for reserved in ("path", "source"):
        if reserved in data:
            raise SpecError(path, f"unknown key {reserved!r}")
    try:
        spec = ExperimentSpec(**data, path=str(path), source=text)
    except ValidationError as exc:
        first = exc.errors()[0]
        try:
            line = _line_of(yaml.compose(text, Loader=_Loader), first["loc"])
        except yaml.YAMLError:
            line = None
        raise SpecError(path, _describe(first), line) from None
    except TypeError as exc:  # non-string keys at the top level
        raise SpecError(path, f"invalid spec: {exc}") from None
    clash = set(spec.baselines) & set(spec.variants)
    if clash:
        raise SpecError(path, f"name {sorted(clash)[0]!r} is both a baseline and a variant")
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read a spec file. Relative paths inside it are resolved by ``plan``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, "no such spec file") from None
    except IsADirectoryError:
        raise SpecError(path, "is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(path, f"cannot read spec: {err}") from None
    return parse_spec(text, p)

"""Which models exist, where their defaults live, and which parameter names are real.

Why not just ask RecBole: importing ``recbole.utils.get_model`` pulls in torch and every
model module, and ``Config()`` has global side effects. The planner must validate a
spec in a fraction of a second, before any run, so it reads RecBole's *files*
(model sources and property YAMLs) instead of importing RecBole. Our own models come
from the ``models`` package (``models.MODELS``), which knows nothing of ablate.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def recbole_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError("recbole is not installed (pip install --no-deps recbole==1.2.1)")
    return Path(spec.origin).parent


@lru_cache(maxsize=1)
def recbole_models() -> dict[str, str]:
    """RecBole model name -> model type folder, found the way ``get_model`` finds them:
    a class ``Name`` in ``recbole/model/<type>_recommender/<name.lower()>.py``."""
    found: dict[str, str] = {}
    for folder in sorted((recbole_dir() / "model").glob("*_recommender")):
        for src in folder.glob("*.py"):
            text = src.read_text(encoding="utf-8", errors="replace")
            for name in re.findall(r"^class (\w+)\s*\(", text, flags=re.M):
                if name.lower() == src.stem:
                    found[name] = folder.name
    return found


@lru_cache(maxsize=1)
def custom_models() -> tuple[str, ...]:
    """Names of this project's ``models`` package; listing them imports no torch."""
    try:
        import models
    except ImportError:  # models/ not installed: only RecBole's own models exist
        return ()
    return tuple(getattr(models, "NAMES", ()))


def model_names() -> list[str]:
    return sorted(set(recbole_models()) | set(custom_models()))


def is_custom(name: str) -> bool:
    return name in custom_models() and name not in recbole_models()


def exists(name: str) -> bool:
    return name in recbole_models() or name in custom_models()


def defaults_file(name: str) -> Path | None:
    """The YAML holding a model's own defaults, or None."""
    if is_custom(name):
        import models

        path = models.default_config_file(name)
        return Path(path) if path else None
    path = recbole_dir() / "properties" / "model" / f"{name}.yaml"
    return path if path.is_file() else None


@lru_cache(maxsize=None)
def model_defaults(name: str) -> dict:
    from ablate.spec import load_yaml  # pydantic and yaml: the planner's, never a worker's

    path = defaults_file(name)
    if path is None:
        return {}
    return load_yaml(path.read_text(encoding="utf-8"), path) or {}


# Keys RecBole reads without declaring them in any property file.
_EXTRA_KEYS = {
    "model", "dataset", "gpu_id", "use_gpu", "device", "local_rank", "nproc", "world_size",
    "offset", "ip", "port", "backend", "single_spec", "eval_type", "MODEL_TYPE",
    "MODEL_INPUT_TYPE", "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args",
    # ablate's own: the worker reads it (ablate.fastpath), RecBole ignores it
    "fast_path",
}


@lru_cache(maxsize=1)
def _general_keys() -> frozenset[str]:
    from ablate.spec import load_yaml

    keys: set[str] = set(_EXTRA_KEYS)
    props = recbole_dir() / "properties"
    for path in [props / "overall.yaml", *sorted((props / "dataset").glob("*.yaml"))]:
        data = load_yaml(path.read_text(encoding="utf-8"), path) or {}
        keys.update(data)
    ns: dict = {}
    exec((recbole_dir() / "utils" / "argument_list.py").read_text(encoding="utf-8"), ns)  # noqa: S102 - RecBole's own list literals
    for value in ns.values():
        if isinstance(value, list):
            keys.update(k for k in value if isinstance(k, str))
    return frozenset(keys)


@lru_cache(maxsize=1)
def recbole_defaults() -> dict:
    """RecBole's own defaults for the settings every run has (``overall.yaml``, then the
    dataset defaults of ``dataset/sample.yaml``): what a run gets for a key nobody set."""
    from ablate.spec import load_yaml

    props = recbole_dir() / "properties"
    out: dict = {}
    for path in (props / "dataset" / "sample.yaml", props / "overall.yaml"):
        data = load_yaml(path.read_text(encoding="utf-8"), path) or {}
        out.update({k: v for k, v in data.items() if v is not None or k not in out})
    return out


@dataclass(frozen=True)
class Metric:
    """A metric RecBole knows: its class name, whether it is reported per cutoff
    (``recall@10``) and whether it is a value metric (AUC, MAE: never with full ranking)."""

    name: str
    topk: bool
    value: bool


@lru_cache(maxsize=1)
def recbole_metrics() -> dict[str, Metric]:
    """RecBole's metrics by lower-case name, as ``recbole.evaluator.register`` collects them
    (every class defined in ``evaluator/metrics.py``), read with ``ast`` so that no torch is
    imported. A metric is per cutoff when it derives from ``TopkMetric`` or reads
    ``self.topk``; it is a value metric when its ``metric_type`` (own or inherited from
    ``base_metric.py``) is ``EvaluatorType.VALUE``."""
    import ast

    def classes(path: Path) -> list[ast.ClassDef]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return [n for n in tree.body if isinstance(n, ast.ClassDef)]

    def own_type(node: ast.ClassDef) -> str | None:
        for st in node.body:
            if isinstance(st, ast.Assign) and any(getattr(t, "id", None) == "metric_type" for t in st.targets):
                return ast.unparse(st.value).rsplit(".", 1)[-1]
        return None

    folder = recbole_dir() / "evaluator"
    base_types = {n.name: own_type(n) for n in classes(folder / "base_metric.py")}
    found: dict[str, Metric] = {}
    for node in classes(folder / "metrics.py"):
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        kind = own_type(node) or next((base_types.get(b) for b in bases if base_types.get(b)), None)
        topk = "TopkMetric" in bases or any(isinstance(n, ast.Attribute) and n.attr == "topk" for n in ast.walk(node))
        found[node.name.lower()] = Metric(node.name, topk, kind == "VALUE")
    return found


def known_params(model: str) -> frozenset[str]:
    """Parameter names a run of ``model`` may set: RecBole's general ones plus the model's."""
    return _general_keys() | frozenset(model_defaults(model))


def resolve_class(name: str):
    """The model class (imports torch/RecBole: worker side only)."""
    if is_custom(name):
        import models

        return models.get_model(name)
    from recbole.utils import get_model

    return get_model(name)

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

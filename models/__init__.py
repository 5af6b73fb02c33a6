"""RecBole models for ablate: the researcher's LightGCNOT, and SimGCL / XSimGCL.

``MODELS`` maps a model name to its RecBole ``GeneralRecommender`` subclass;
``default_config_file(name)`` gives the YAML with every key that model reads. The
package knows nothing of ablate: callers apply ``ablate.compat`` before building
RecBole objects. Importing it imports RecBole's model base classes, not PyG (the GAT
generator imports torch_geometric lazily).
"""

from __future__ import annotations

import os

from .lightgcn_base import LightGCNBase
from .lightgcn_ot import LightGCNOT
from .simgcl import SimGCL
from .xsimgcl import XSimGCL

__all__ = ["MODELS", "LightGCNBase", "LightGCNOT", "SimGCL", "XSimGCL", "default_config_file", "get_model"]

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")

MODELS: dict[str, type] = {
    "LightGCNOT": LightGCNOT,
    "SimGCL": SimGCL,
    "XSimGCL": XSimGCL,
}


def get_model(name: str) -> type | None:
    """The model class registered under ``name`` (case-sensitive, as RecBole), or None."""
    return MODELS.get(name)


def default_config_file(name: str) -> str | None:
    """Absolute path of ``name``'s defaults YAML, or None when it is not ours."""
    if name not in MODELS:
        return None
    path = os.path.join(_CONFIG_DIR, f"{name}.yaml")
    return path if os.path.isfile(path) else None

"""RecBole models for ablate: the researcher's LightGCNOT, SimGCL / XSimGCL, and
NCLAblation (RecBole's NCL with its init step as a setting).

``MODELS`` maps a model name to its RecBole ``GeneralRecommender`` subclass;
``default_config_file(name)`` gives the YAML with every key that model reads. The
package knows nothing of ablate: callers apply ``ablate.compat`` before building
RecBole objects. Importing the package is cheap (no torch, no RecBole): the classes are
imported on first access; the GAT generator imports torch_geometric lazily.
"""

from __future__ import annotations

import os

__all__ = ["ADDED_SETTINGS", "MODELS", "NAMES", "VERSIONS", "LightGCNBase", "LightGCNOT", "NCLAblation", "SimGCL",
           "XSimGCL", "default_config_file", "get_model"]

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")

# name -> module holding the class. Kept as text so that listing the models and reading
# their defaults (what a planner validating a spec needs) imports neither torch nor RecBole.
_WHERE = {
    "LightGCNBase": "lightgcn_base",
    "LightGCNOT": "lightgcn_ot",
    "SimGCL": "simgcl",
    "XSimGCL": "xsimgcl",
    "NCLAblation": "ncl",
}
NAMES: tuple[str, ...] = ("LightGCNOT", "SimGCL", "XSimGCL", "NCLAblation")

# Implementation version of each model: bumped by whoever changes the numbers a model
# computes for a given config (a fixed bug, a new default arithmetic), so that runs made
# by the older code are not taken for current ones (callers hash it into a run's identity).
# A model not listed is at version 1.
#   LightGCNOT 2: the default path is GSC's arithmetic (batch-wide cost pruning, no cost
#                 shift, no plan rounding); the earlier choices are switches.
#   SimGCL 2:     require_pow follows RecBole's default (False), as RecBole-GNN runs it.
#   XSimGCL 2:    the contrastive term is a mean over the batch's users/items, as in
#                 RecBole-GNN (it was SimGCL's sum: ~700x larger on ml-100k).
VERSIONS: dict[str, int] = {"LightGCNOT": 2, "SimGCL": 2, "XSimGCL": 2}

# Settings a model gained after runs of it were stored. At its default each one computes
# exactly what the model computed before it existed (tests/models/test_switches.py), so
# a caller that names a run by its config leaves it out there, and every config that does
# not use it keeps the identity it had. Append only: a listed setting stays listed.
ADDED_SETTINGS: dict[str, tuple[str, ...]] = {
    "LightGCNOT": (
        "param_init", "bpr_weight", "ot_z1_gat_input", "ot_simgcl_input", "n_node_centres", "ot_groups",
        "a2_weights", "ot_normalize",
    ),
}


def __getattr__(attr: str):
    """Import model classes (and ``MODELS``) on first use."""
    if attr in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[attr]}", __name__), attr)
    if attr == "MODELS":
        return {name: __getattr__(name) for name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def get_model(name: str) -> type | None:
    """The model class registered under ``name`` (case-sensitive, as RecBole), or None."""
    return __getattr__(name) if name in NAMES else None


def default_config_file(name: str) -> str | None:
    """Absolute path of ``name``'s defaults YAML, or None when it is not ours."""
    if name not in NAMES:
        return None
    path = os.path.join(_CONFIG_DIR, f"{name}.yaml")
    return path if os.path.isfile(path) else None

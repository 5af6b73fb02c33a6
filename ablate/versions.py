"""Implementation versions: which code computed a run's numbers.

A run's key hashes its config (:func:`ablate.plan.run_key`). A config alone cannot tell
two implementations apart: after a fix to a model, the same config would find the run
made by the old code and show its numbers as current. So each run also carries the
implementation it was planned for (hashed into its key) and was trained by (recorded
with its versions), and reports compare what a stored run was made by with what this
checkout would compute.

Two counters make an implementation:

* the model's version: ``models.VERSIONS`` for this project's models, bumped by whoever
  changes the numbers a model computes; RecBole's own models are at 1 (their code is
  RecBole's, pinned by the install) unless ablate's way of running one changed its
  numbers (:data:`RECBOLE_MODELS`);
* :data:`NUMBERS`, the version of ablate's own code paths that change numbers (RecBole
  compatibility patches, the fast training loop, the worker's data handling).

Implementations at version 1 of both leave a key as it was before versions existed, so
runs stored then keep their keys unless their model's numbers have changed since.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# ablate's own code paths that change a run's numbers (ablate.compat, ablate.fastpath,
# the worker's data handling). Bump when one of them changes what a run computes.
NUMBERS = 1

INITIAL = 1


# RecBole's models whose numbers through ablate changed (RecBole's code did not):
#   SGL 2: the worker calls RecBole's get_flops as run_recbole does; its train(True) on a
#          copy of the model draws an augmented graph, so SGL's random stream, and its
#          numbers, now equal RecBole's quick start.
RECBOLE_MODELS = {"SGL": 2}


def model_version(model: str | None) -> int:
    """The implementation version of ``model`` in this checkout (1 when not versioned)."""
    if not model:
        return INITIAL
    if model in RECBOLE_MODELS:
        return RECBOLE_MODELS[model]
    try:
        import models
    except ImportError:  # models/ not installed: only RecBole's models exist
        return INITIAL
    return int(getattr(models, "VERSIONS", {}).get(model, INITIAL))


def label(model: str | None, version: int | None = None, numbers: int | None = None) -> str:
    """``"XSimGCL@2+ablate@1"``: what a run records as the implementation that trained it."""
    version = model_version(model) if version is None else version
    numbers = NUMBERS if numbers is None else numbers
    return f"{model}@{version}+ablate@{numbers}"


def key_part(model: str | None) -> dict[str, str]:
    """What :func:`ablate.plan.run_key` hashes beside the config: nothing at the initial
    versions (keys made before versions existed stay valid), the label otherwise."""
    if model_version(model) == INITIAL and NUMBERS == INITIAL:
        return {}
    return {"__implementation__": label(model)}


def recorded(stored_versions: dict | None, model: str | None) -> str:
    """The implementation a stored run was trained by: its recorded label, or the initial
    versions for runs trained before labels were recorded."""
    got = (stored_versions or {}).get("implementation")
    return got if isinstance(got, str) and got else label(model, INITIAL, INITIAL)


def is_current(stored_versions: dict | None, model: str | None) -> bool:
    """Whether a stored run was trained by the implementation this checkout runs."""
    return recorded(stored_versions, model) == label(model)


def git_commit(where: Path) -> str | None:
    """The project's commit (``-dirty`` when it has uncommitted changes), if it is a repo."""
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None

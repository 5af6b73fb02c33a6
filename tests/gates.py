"""The one gate between "skip here" and "fail on CI".

A test skips, with its reason, where what it needs is missing (a Slurm cluster,
PostgreSQL, a browser, Triton). Under ``CI=true`` (any case, surrounding blanks ignored)
the CI machine has all of it (``.ci/run`` brings it up), so there a skip would hide a test
nobody ran: ``tests/conftest.py`` turns every skip into a failure, in one place, with this
one reading of the variable.
"""

from __future__ import annotations

import os
from typing import Mapping

MESSAGE = "CI=true: no test may skip on CI"


def under_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether this is a CI run: ``CI`` is ``true`` (case-insensitive)."""
    return (os.environ if env is None else env).get("CI", "").strip().lower() == "true"


def failure(reason: str) -> str:
    """What a skip becomes under CI."""
    return f"{MESSAGE} ({reason})"

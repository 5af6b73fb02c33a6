"""How tests call ``ablate`` with the test models (``run_ablate.py`` here); importing this
module registers nothing in the test's own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUN_ABLATE = Path(__file__).resolve().parent / "run_ablate.py"


def with_test_models(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``ablate ARGS`` as a real process that also knows OOMBPR and NoisyBPR."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    return subprocess.run([sys.executable, str(RUN_ABLATE), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)

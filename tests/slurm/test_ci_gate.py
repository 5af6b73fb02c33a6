"""Under CI=true a test of the real services that skips is a failure (tests/slurm/conftest.py),
so CI cannot pass without the Slurm cluster and PostgreSQL. Checked by running one such
test in a pytest of its own, pointed at a folder where no services were brought up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_a_real_service_test_that_skips_fails_under_ci(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_TEST_")}
    env.update(CI="true", ABLATE_SERVICES_DIR=str(tmp_path))  # no services.env there
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           f"{HERE / 'test_real_slurm.py'}::test_cancel_spec"], cwd=HERE.parent.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "1 error" in out, out
    assert "CI=true: a test of the real services may not skip (Skipped: no real Slurm cluster" in out, out

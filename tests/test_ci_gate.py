"""Under CI=true no test may skip (tests/gates.py, applied in tests/conftest.py): the CI
machine has the Slurm cluster, PostgreSQL, Chromium and Triton, and a skip there would
hide a test nobody ran. Checked by running tests whose needs are taken away here (no
services file, no chromium on PATH, a triton that cannot be imported) in a pytest of
their own, with CI=true spelt two ways, and without it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests import gates

ROOT = Path(__file__).parent.parent
TESTS = [
    "tests/slurm/test_real_slurm.py::test_cancel_spec",  # a fixture that skips
    "tests/report/test_html_report.py::test_report_in_a_real_browser",  # a test body that skips
    "tests/models/test_ot_triton_plans.py",  # a module that skips as a whole (importorskip)
]


def _pytest(tmp_path: Path, ci: str | None) -> str:
    shim = tmp_path / "shim" / "triton"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text("raise ImportError('triton is hidden by tests/test_ci_gate.py')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_TEST_") and k != "CI"}
    (tmp_path / "bin").mkdir(exist_ok=True)
    env.update(ABLATE_SERVICES_DIR=str(tmp_path),  # no services.env there
               PATH=str(tmp_path / "bin"),  # nothing on it: no chromium, no sbatch
               PYTHONPATH=os.pathsep.join([str(shim.parent), *filter(None, [env.get("PYTHONPATH")])]))
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors",
                           *TESTS], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    return done.stdout + done.stderr


def test_every_skip_fails_under_ci(tmp_path):
    for spelling in ("true", " TRUE "):
        out = _pytest(tmp_path, spelling)
        assert re.search(r"\b1 failed, 2 errors\b", out), out
        assert "skipped" not in out.splitlines()[-1], out
        for need in ("no real Slurm cluster", "chromium and chromedriver are not installed", "could not import 'triton'"):
            assert f"{gates.MESSAGE} (" in out and need in out, (need, out)


def test_without_ci_the_same_tests_skip_with_their_reasons(tmp_path):
    for value in (None, "false"):
        out = _pytest(tmp_path, value)
        assert re.search(r"\b3 skipped\b", out) and "failed" not in out and "error" not in out.lower(), out
        assert gates.MESSAGE not in out, out


def test_one_reading_of_ci():
    assert [gates.under_ci({"CI": v}) for v in ("true", "True", " TRUE\n", "false", "1", "")] == [
        True, True, True, False, False, False]
    assert gates.under_ci({}) is False

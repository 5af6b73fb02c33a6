"""The layers of ``docs/design.md``, enforced: import-linter's contracts in pyproject.toml.

cli over the API over scheduling, search and reports, over executors, over the worker,
over the store and specs; ``models/`` imports nothing of ablate; no two modules of a
package import each other. Every import counts, function-level ones too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_are_kept():
    out = _lint(ROOT / "pyproject.toml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_the_layers_contract_sees_the_imports(tmp_path):
    """The same layers upside down must break: the contract reads real import edges."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"layers = \[\n(.*?)\n\]", text, re.S)
    lines = block.group(1).splitlines()
    flipped = text.replace(block.group(1), "\n".join(reversed(lines)))
    (tmp_path / "pyproject.toml").write_text(flipped)
    out = _lint(tmp_path / "pyproject.toml")
    assert out.returncode != 0 and "BROKEN" in out.stdout
    assert "ablate.cli" in out.stdout

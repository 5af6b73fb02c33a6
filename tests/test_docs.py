"""The README is the front door: every command is documented there, and its test
command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from ablate.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_is_shown_in_the_readme():
    names = sorted(get_command(app).commands)
    assert {"run", "table", "rerun", "show", "status", "log", "plot", "doctor", "collect", "cancel"} <= set(names)
    missing = [n for n in names if not re.search(rf"ablate {n}\b", README)]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    readme_cmd = re.search(r"## Tests\s+```bash\n(.+?)\n```", README, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    def normalise(cmd: str) -> str:  # CI spells pip quietly; the steps must be the same
        return re.sub(r"\s+", " ", cmd.replace("python -m pip install -q", "pip install")).strip()

    assert normalise(readme_cmd) in normalise(ci)

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


DOCS = sorted((ROOT / "docs").glob("*.md"))


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_the_readme_points_to_every_doc_and_every_link_resolves():
    assert {p.name for p in DOCS} >= {"design.md", "models.md", "reliability.md", "performance.md"}
    assert all(f"docs/{p.name}" in README for p in DOCS)
    broken = []
    for page in [ROOT / "README.md", *DOCS]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and anchor not in _anchors(dest.read_text(encoding="utf-8"))):
                broken.append(f"{page.name}: {target}")
    assert broken == []


def test_the_docs_name_only_real_commands():
    names = set(get_command(app).commands)
    said = {m for p in [ROOT / "README.md", *DOCS]
            for m in re.findall(r"(?:`|^)ablate ([a-z][a-z-]*)", p.read_text(encoding="utf-8"), re.M)}
    assert said - names == set()

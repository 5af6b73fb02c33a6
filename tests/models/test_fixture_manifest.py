"""Every committed reference fixture is the one its script wrote: ``fixtures/MANIFEST.json``
lists each file's sha256, the script that made it (and that script's own sha256 when it
ran), the reference's repository and commit, and the versions it ran on. A fixture edited
by hand, a file no script made, or a script changed without regenerating fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.models.fixtures import manifest  # fixtures/ holds no __init__.py: every file there but the scripts is data

FIXTURES = Path(__file__).parent / "fixtures"

LISTED = manifest.load()["files"]


def test_every_fixture_file_is_listed_and_every_listed_file_exists():
    assert sorted(LISTED) == manifest.fixture_files()


@pytest.mark.parametrize("name", sorted(LISTED))
def test_fixture_is_what_its_script_wrote(name):
    entry = LISTED[name]
    assert manifest.sha256(FIXTURES / name) == entry["sha256"], f"{name} changed since {entry['script']} wrote it"
    script = FIXTURES / entry["script"]
    assert script.is_file() and script.parent == (FIXTURES / name).parent, entry["script"]
    assert manifest.sha256(script) == entry["script_sha256"], (
        f"{entry['script']} changed since it wrote {name}: run it again (its README says how)")


@pytest.mark.parametrize("name", sorted(LISTED))
def test_fixture_names_its_reference_commit_and_versions(name):
    entry = LISTED[name]
    ref = entry["reference"]
    assert ref["repository"].startswith("https://github.com/") and re.fullmatch(r"[0-9a-f]{40}", ref["commit"]), ref
    assert {"python", "torch", "torch_geometric", "numpy"} <= entry["versions"].keys(), entry["versions"]
    # the commit is the one the fixture's README names
    assert ref["commit"] in (FIXTURES / name).parent.joinpath("README.md").read_text(encoding="utf-8")


def test_recbole_gnn_meta_records_what_the_manifest_says():
    """meta.json (read by the test) was written by the same run as the arrays: same commit
    and versions, and RecBole as the reference ran it (unpatched, numpy < 2)."""
    meta = json.loads((FIXTURES / "recbole_gnn" / "meta.json").read_text(encoding="utf-8"))
    for name in ("recbole_gnn/SimGCL.npz", "recbole_gnn/XSimGCL.npz", "recbole_gnn/meta.json"):
        entry = LISTED[name]
        assert entry["reference"]["commit"] == meta["recbole_gnn_commit"]
        assert entry["versions"] == {k: meta[k] for k in entry["versions"]}
    assert meta["recbole"] == "1.2.1" and int(meta["numpy"].split(".")[0]) < 2

"""Property-based: malformed specs and arguments give one error line, exit 2, and leave
the database byte for byte as it was."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from typer.testing import CliRunner

from ablate import plan, spec as spec_mod
from ablate.cli import app
from ablate.errors import AblateError
from ablate.store import Metric, Run, Store

GOOD = {
    "name": "bad",
    "base": {"dataset": "ml-100k", "epochs": 1, "embedding_size": 8, "topk": [10], "metrics": ["Recall", "NDCG"],
             "valid_metric": "NDCG@10"},
    "seeds": [2020],
    "baselines": {"BPR": {"model": "BPR"}},
    "variants": {"v": {"model": "LightGCN", "grid": {"n_layers": [1, 2]}}},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)
PLACES = [("name",), ("description",), ("base",), ("seeds",), ("baselines",), ("variants",), ("grid",), ("zip",),
          ("run_name",), ("check_params",), ("baselines", "BPR"), ("baselines", "BPR", "model"),
          ("variants", "v", "grid"), ("variants", "v", "grid", "n_layers"), ("variants", "v", "extends"),
          ("variants", "v", "params"), ("variants", "v", "zip"), ("variants", "v", "run_name"), ("base", "dataset")]


def _set(doc: dict, place: tuple, value):
    for key in place[:-1]:
        doc = doc[key]
    doc[place[-1]] = value


def _mutated(draw_place, value):
    import copy

    doc = copy.deepcopy(GOOD)
    _set(doc, draw_place, value)
    return yaml.safe_dump(doc, allow_unicode=True).encode()


FIXED = [
    b"variants: {a: {extends: b}, b: {extends: a}}\nbase: {dataset: ml-100k}\n",
    b"variants: {a: {extends: a, model: BPR}}\nbase: {dataset: ml-100k}\n",
    b"base: {dataset: ml-100k}\nbaselines: {B: {model: BPR}}\nzip: [{n_layers: [1, 2], reg_weight: [1]}]\n",
    b"base: {dataset: ml-100k}\nbaselines: {B: {model: BPR}}\nvariants: {v: {model: BPR, grid: {n_layers: []}}}\n",
    b"base: !!python/object/apply:os.system ['touch /tmp/ablate-pwned']\n",
    b"base: !!python/object:collections.OrderedDict {}\n",
    b"name: \xff\xfe bad bytes\n",
    b"\x00\x01\x02",
    b"base: {dataset: ml-100k, epochs: 1e400}\nbaselines: {B: {model: BPR}}\n",
    b"[1, 2, 3]\n",
    b"",
    b"a: [unclosed\n",
    b"base: {dataset: ml-100k}\nbaselines: {B: {model: BPR}}\nseeds: [1, 1]\n",
    b"base: {dataset: ml-100k}\nbaselines: {B: {model: BPR}}\nvariants: {B: {model: BPR}}\n",
    b"base: {dataset: ml-100k}\nvariants: {v: {model: LightGCN, run_name: '{nope}'}}\n",
    b"base: {dataset: ml-100k}\nvariants: {v: {model: LightGCN, run_name: '{0}'}}\n",
    b"base: {dataset: ml-100k}\nvariants: {v: {model: LightGCN, params: {embeding_size: 8}}}\n",
    b"name: x\nname: y\n",
    b"&a [*a]\n",
    b"base: &b {dataset: ml-100k, x: *b}\nbaselines: {B: {model: BPR}}\ncheck_params: false\n",
]

specs = st.one_of(
    st.sampled_from(FIXED),
    st.builds(_mutated, st.sampled_from(PLACES), anything),
    anything.map(lambda v: yaml.safe_dump(v).encode()),  # random YAML structures
    st.binary(max_size=200),  # random bytes, mostly not UTF-8 or not YAML
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory) -> tuple[Path, str]:
    """A store holding one finished run, inserted directly; folded into a single file."""
    path = tmp_path_factory.mktemp("bad") / "results.db"
    store = Store(str(path))
    with store.session() as s:
        run = Run(key="0123456789abcdef", name="BPR", model="BPR", dataset="ml-100k", seed=2020, config={}, status="done")
        s.add(run)
        s.flush()
        s.add(Metric(run_id=run.id, split="test", name="recall@10", value=0.1))
    store.engine.dispose()
    return path, _digest(path)


def _digest(path: Path) -> str:
    wal = path.with_name(path.name + "-wal")
    extra = wal.read_bytes() if wal.exists() else b""
    return hashlib.sha256(path.read_bytes() + b"|" + extra).hexdigest()


def _expect_one_error(res, db: Path, digest: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), res.stderr
    assert "Traceback" not in res.output
    assert _digest(db) == digest


def _is_valid(path: Path) -> bool:
    """Whether the spec would really run (then it is not bad input; hypothesis skips it).
    Any exception other than AblateError propagates: that is a crash to fix."""
    try:
        plan.expand(spec_mod.load_spec(path))
    except AblateError:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=specs)
def test_malformed_specs_one_line_exit_2_store_untouched(data, filled_db, tmp_path_factory):
    db, digest = filled_db
    path = tmp_path_factory.mktemp("spec", numbered=True) / "spec.yaml"
    path.write_bytes(data)
    assume(not _is_valid(path))
    res = CliRunner().invoke(app, ["run", str(path), "--db", str(db)])
    _expect_one_error(res, db, digest)
    assert not Path("/tmp/ablate-pwned").exists()


OPTIONS = ["--db", "--override", "-o", "--gpus", "--per-gpu", "--jobs", "--timeout", "--workdir", "--cpu", "--dry-run",
           "--force", "--bogus", "--keep-checkpoints", "--no-warm", "--executor"]
VALUES = st.one_of(st.sampled_from(["", "-1", "0", "abc", "=", "x=", "=1", "1e999", "nan", "0,0,7", "a,b", "99"]),
                   st.text(max_size=6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), min_size=1, max_size=5),
       command=st.sampled_from(["run", "doctor", "runn", ""]))
def test_malformed_arguments_one_line_exit_2(args, command, filled_db, tiny_spec):
    db, digest = filled_db
    bad = {"--timeout": "-5", "--per-gpu": "zero", "--jobs": "x", "--gpus": "7,8", "-o": "novalue"}
    argv = [command] if command else []
    if command == "run":
        argv.append(str(tiny_spec))
    argv += args
    # every generated command line must contain at least one certain mistake
    opt = next((a for a in args if a in bad), None)
    if command == "run":
        argv += [opt or "-o", bad.get(opt, "novalue")]
    argv += ["--db", str(db)]
    assume("--dry-run" not in argv and "--help" not in argv)
    res = CliRunner().invoke(app, argv)
    if command == "doctor" and res.exit_code in (0, 1):  # doctor accepts its own arguments
        assert _digest(db) == digest
        return
    _expect_one_error(res, db, digest)


@pytest.mark.parametrize("data", [b"base: !!python/object/apply:os.system ['echo pwned']\n", b"\xff\xfe\x00bad"])
def test_console_script_bad_spec_no_traceback(data, filled_db, tmp_path):
    db, digest = filled_db
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(data)
    res = subprocess.run([sys.executable, "-c", "from ablate.cli import main; main()", "run", str(spec), "--db", str(db)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("ablate: error: "), res.stderr
    assert "pwned" not in res.stdout
    assert _digest(db) == digest

"""show, log, status, plot on stores filled directly, and real stores: table, exact rerun,
and a rerun that does not reproduce."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from ablate.cli import app

from tests.report.report_store import fill
from tests.specs import write_tiny
from tests.stored import full_metrics

runner = CliRunner()


def ok(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def small(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "\x1b[1;34mvalid result\x1b[0m: done\n")
    db = tmp_path / "r.db"
    rows = []
    for k2 in (2, 10, 50):
        for seed in (1, 2):
            rows.append(dict(row=f"ot_{k2}k2", seed=seed, point={"k2": k2}, config={"k2": k2, "ot_weight": 1e-7},
                             metrics={"recall@20": 0.2 + k2 / 1000 + seed / 1e4},
                             losses=[{"bpr": 0.6, "ot": 0.1}, {"bpr": 0.5, "ot": 0.09}]))
    rows.insert(0, dict(row="LightGCN", role="baseline", seed=1, metrics={"recall@20": 0.2}, log_path=str(log),
                        valid={"recall@20": 0.21}, losses=[{"loss": 0.6}]))
    rows.append(dict(row="stuck", status="running"))
    fill(db, rows)
    return db


def test_show_diff_metrics_epochs_log(small):
    out = ok("show", 2, "--db", small)  # ot_2k2 seed 1
    assert "run 2 ot_2k2" in out and "config vs baseline LightGCN (run 1, seed 1)" in out
    assert "│ k2 " in out and "ot_weight" in out and "1e-07" in out
    assert "│ bpr " not in out  # losses are columns, not config
    out = ok("show", 1, "--db", small, "-n", 3)
    assert "recall@20 │ 0.2100 │ 0.2000" in out
    assert "line 99" in out and "line 96" not in out and "valid result: done" in out and "\x1b" not in out


def test_log_tail(small):
    out = ok("log", 1, "--db", small, "-n", 2)
    assert out.splitlines() == ["line 99", "valid result: done"]
    res = runner.invoke(app, ["log", "2", "--db", str(small)])
    assert res.exit_code == 2 and res.output.strip() == "ablate: error: run 2 has no log yet (status done)"


def test_status_counts_and_running(small):
    out = ok("status", "--db", small)
    assert "8 runs, 7 done, 1 running" in out and "stuck" in out
    out = ok("status", "exp", "--db", small)
    assert out.startswith("exp: 8 runs, 7 done, 1 running")


def test_plot_sweep_and_curves(small, tmp_path):
    from ablate.report import frame, plot
    from ablate.store import Store

    pts = plot.sweep_points(frame.load(Store(str(small)), ["exp"], with_config=True), "k2", "recall@20", "variant")
    got = {(r.hue, r.x): (round(r.mean, 6), r.n) for r in pts.itertuples()}
    assert got[("ot_10k2", 10)] == (0.21015, 2) and got[("ot_50k2", 50)] == (0.25015, 2)
    png = tmp_path / "k2.png"
    assert "wrote" in ok("plot", "exp", "--x", "k2", "--y", "recall@20", "-o", png, "--db", small)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    curves = tmp_path / "c.png"
    ok("plot", "--curves", 1, 2, "-o", curves, "--db", small)
    assert curves.read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["plot", "exp", "--x", "nope", "-o", str(png), "--db", str(small)])
    assert res.exit_code == 2 and "--x 'nope'" in res.output


# ---------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_real_runs_table_and_exact_rerun(real_db):
    """2 rows x 2 seeds trained for real; the table's marks equal those computed by hand
    from the raw database, and rerunning a CPU run reproduces every metric exactly."""
    import statistics

    db, spec = real_db["db"], real_db["spec"]
    con = sqlite3.connect(db)
    raw = con.execute(
        "SELECT m.row, r.seed, x.name, x.exact FROM experiment_runs m JOIN runs r ON r.id = m.run_id "
        "JOIN metrics x ON x.run_id = r.id WHERE x.split = 'test'").fetchall()  # the means RecBole rounds
    vals: dict = {}
    for row, _seed, name, v in raw:
        vals.setdefault((row, name), []).append(v)
    out = ok("table", spec, "--db", db, "--md")
    lines = out.splitlines()
    metrics = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
    assert lines[0] == "| model | " + " | ".join(metrics) + " |"
    cells = {l.split("|")[1].strip(): [c.strip() for c in l.strip().strip("|").split("|")[1:]]
             for l in lines[2:] if l.startswith("|")}  # the table; its footnotes follow
    for j, m in enumerate(metrics):
        shown = {r: f"{statistics.mean(vals[(r, m)]):.4f}" for r in ("LightGCN", "L1")}
        order = sorted(set(shown.values()), reverse=True)
        for r in ("LightGCN", "L1"):
            text = f"{shown[r]} ± {statistics.stdev(vals[(r, m)]):.4f}"
            if shown[r] == order[0]:
                text = f"**{text}**"
            elif len(order) > 1 and shown[r] == order[1]:
                text = f"<u>{text}</u>"
            assert cells[f"{r} (n=2)"][j].startswith(text), (m, r, cells)

    rid = con.execute("SELECT r.id FROM runs r JOIN experiment_runs m ON m.run_id = r.id WHERE m.row = 'L1' "
                      "ORDER BY r.seed LIMIT 1").fetchone()[0]
    con.close()
    out = ok("rerun", rid, "--db", db, "--cpu")
    assert f"reproduced: all 12 metrics (valid and test) equal run {rid} exactly (max |diff| 0)" in out
    con = sqlite3.connect(db)
    new = con.execute("SELECT id, key FROM runs WHERE rerun_of = ?", (rid,)).fetchone()
    stored = full_metrics(db, by="id")
    assert len(stored[rid]) == 12 and stored[new[0]] == stored[rid]  # unrounded means and per-user values
    assert con.execute("SELECT count(*) FROM experiment_runs WHERE run_id = ?", (new[0],)).fetchone()[0] == 0
    con.close()
    # the rerun stays out of the table: still n=2 per row, same numbers
    assert ok("table", spec, "--db", db, "--md") == "\n".join(lines) + "\n"


@pytest.mark.slow
def test_rerun_of_a_run_that_does_not_repeat_says_not_reproduced(tmp_path):
    """NoisyBPR (tests/testmodels) starts from embeddings no seed controls: `ablate rerun`
    trains it again, names each metric that changed with both values, and exits 1; the
    original keeps its numbers and its table row."""
    import re

    from tests.testmodels.cli import with_test_models

    spec = write_tiny(tmp_path, "noisy", topk=[10, 20, 50], baselines={"noisy": {"model": "NoisyBPR"}})
    db = tmp_path / "r.db"
    first = with_test_models("run", spec, "--db", db, "--cpu", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    con = sqlite3.connect(db)
    before = dict(((split, name), v) for split, name, v in con.execute(
        "SELECT split, name, exact FROM metrics WHERE run_id = 1"))  # compared at full precision
    con.close()
    table = ok("table", spec, "--db", db, "--md")

    res = with_test_models("rerun", "1", "--db", db, "--cpu", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT id, rerun_of, status, attempts FROM runs WHERE id = 2").fetchone() == (2, 1, "done", 1)
    after = dict(((split, name), v) for split, name, v in con.execute(
        "SELECT split, name, exact FROM metrics WHERE run_id = 2"))
    assert dict(((split, name), v) for split, name, v in con.execute(
        "SELECT split, name, exact FROM metrics WHERE run_id = 1")) == before
    con.close()
    assert len(before) == len(after) == 12
    differ = {k for k in before if before[k] != after[k]}
    assert differ, (before, after)
    worst = max(abs(before[k] - after[k]) for k in before)
    lines = res.stdout.splitlines()
    assert (f"NOT reproduced: {len(differ)} of 12 metrics differ from run 1 at full precision, max |diff| {worst:.6g}"
            in lines), res.stdout
    shown = [ln.strip() for ln in lines if re.match(r"  (valid|test) \S+@", ln)]
    assert shown == [f"{split} {name} {before[split, name]!r} -> {after[split, name]!r}"
                     for split, name in sorted(differ)][:12], res.stdout
    assert "  test per-user values: " in lines[-1] or "  test per-user values: " in lines[-2], res.stdout
    assert "reproduced: all" not in res.stdout
    assert ok("table", spec, "--db", db, "--md") == table  # the rerun stays out of the table

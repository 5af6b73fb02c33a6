"""`ablate table` and `ablate status` fit the terminal without cutting anything: at 80
and 200 columns (COLUMNS, as a terminal sets it), on a pipe, and on a real pseudo-terminal
of 80 columns, every run name, header and state appears whole, no line of a table is wider
than the terminal, notes are marks with footnotes."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from ablate.cli import app

from tests.report.report_store import fill

runner = CliRunner()
PAPER = Path(__file__).resolve().parents[2] / "experiments" / "references" / "ncl_paper.yaml"
METRICS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]
SHORT = ["r10", "n10", "r20", "n20", "r50", "n50"]
# Names as long as the notebook's, CJK (two cells a character) and rich-markup brackets included.
NAMES = ["LightGCN", "wg06A2a_z1:-3_z2:-1+0.01*ncl_kmeans_warmupall(a,moba3)",
         "wg06A2x_z1:-2_z2:lg(list[-1])_负样本2(其他子图的z2)", "z2_gat[dontchange]",
         "sample_adj, subg1_adj: A_2, A_2; 0k1_9k2; 1515b；1e-8ot"]


def invoke(*args, columns: int | None):
    env = {"COLUMNS": str(columns)} if columns else {"COLUMNS": None}
    res = runner.invoke(app, [str(a) for a in args], env=env)
    assert res.exit_code == 0, res.output
    return res.output


def table_lines(out: str) -> list[str]:
    """The lines drawn by a rich table (its box characters), footnotes excluded."""
    return [line for line in out.splitlines() if line[:1] in "┏┃┡│└┗┣╇"]


@pytest.fixture
def store(tmp_path):
    """Two seeds per row (so cells carry ± std), a row identical to another and a
    negligible OT term (so there are notes), and a failed row."""
    db = tmp_path / "r.db"
    rows = []
    for i, name in enumerate(NAMES):
        for seed in (1, 2):
            v = 0.18 + 0.002 * (i % 3) + 0.0003 * seed
            rows.append(dict(row=name, role="baseline" if i == 0 else "variant", seed=seed,
                             metrics={m: v + 0.01 * j for j, m in enumerate(METRICS)},
                             losses=[{"bpr": 0.5, "reg": 1e-5, "ot": 1e-9}]))
    rows.append(dict(row="crashed_run_with_a_long_name", status="failed"))
    fill(db, rows, name="notebook")
    return db


@pytest.mark.parametrize("columns", [80, 200, None], ids=["80", "200", "pipe"])
def test_table_never_cuts_a_name_or_header(store, columns):
    out = invoke("table", "notebook", "--db", store, "--reference", PAPER, columns=columns)
    assert "…" not in out
    for name in NAMES + ["crashed_run_with_a_long_name", "Δ best vs LightGCN"]:
        assert name in out, name
    headers = SHORT if columns == 80 else METRICS  # the notebook's names when space is short
    for h in headers:
        assert f" {h} " in out, h
    assert "note" not in out.split("\n", 3)[2]  # notes are marks, not a column
    if columns:
        assert all(cell_len(line) <= columns for line in table_lines(out)), out
    # notes as marks: the identical row points to its twin, the OT term is flagged
    assert "¹ ≡ LightGCN" in out or "≡ LightGCN" in out
    assert "negligible ot (<1% of main loss" in out
    assert "0k1_9k2; 1515b；1e-8ot (n=2) " in out  # the label and its mark, whole
    # the paper's rows and their source under the table
    assert "NCL †" in out and "0.2057" in out and "† Lin et al." in out
    if columns == 80:  # the narrow layout: two or more stacked tables, ± std left out, said
        assert out.count("┃ model ") >= 2 and " ± " not in out
        assert "± std and per-cell Δ left out to fit 80 columns" in out
    else:  # room for everything: one table, mean ± std in the cells
        assert out.count("┃ model ") == 1 and "0.1804 ± 0.0002" in out


def on_a_terminal(args, columns: int, rows: int = 60, timeout: float = 120) -> str:
    """``ablate ARGS`` with its stdout, stderr and stdin on a pseudo-terminal ``columns``
    wide (its window size set with TIOCSWINSZ, as a terminal emulator does; no COLUMNS in
    the environment), read until it exits; what it drew, escape sequences removed."""
    import fcntl
    import os
    import re
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-c", "from ablate.cli import main; main()", *map(str, args)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    data, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed, the process is done writing
                break
            if not chunk:
                break
            data += chunk
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, data.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = data.decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text)


def test_table_fits_a_real_80_column_terminal(store):
    """The branch that asks the terminal for its width (no COLUMNS): the same narrow layout
    as COLUMNS=80 gives, every name whole, every line within 80 cells, notes as marks."""
    out = on_a_terminal(["table", "notebook", "--db", store, "--reference", PAPER], columns=80)
    assert "…" not in out
    for name in NAMES + ["crashed_run_with_a_long_name", "Δ best vs LightGCN"]:
        assert name in out, name
    assert all(f" {h} " in out for h in SHORT) and out.count("┃ model ") >= 2 and " ± " not in out, out
    assert all(cell_len(line) <= 80 for line in table_lines(out)), out
    assert "± std and per-cell Δ left out to fit 80 columns" in out
    # notes as marks after the names, and their footnotes under the tables
    assert "z2_gat[dontchange] (n=2) ¹,² " in out and "0k1_9k2; 1515b；1e-8ot (n=2) ¹,³ " in out
    assert "\n¹ negligible ot (<1% of main loss" in out and "\n² ≡ LightGCN\n" in out
    assert out == invoke("table", "notebook", "--db", store, "--reference", PAPER, columns=80)


def test_narrow_layout_keeps_the_numbers(store):
    """The 80-column layout shows the same means (and significance marks) as the wide one."""
    import re

    def cells(out):
        got = {}
        for line in table_lines(out):
            parts = [p.strip() for p in line.strip("│").split("│")]
            if len(parts) > 1:
                name = re.sub(r"\s[¹²³⁴⁵⁶⁷⁸⁹⁰,]+$", "", parts[0])
                got.setdefault(name, []).extend(re.sub(r" ± [0-9.]+", "", p) for p in parts[1:])
        return got

    wide = cells(invoke("table", "notebook", "--db", store, columns=300))
    narrow = cells(invoke("table", "notebook", "--db", store, columns=80))
    assert narrow == wide and len(wide["LightGCN (n=2)"]) == 6


@pytest.fixture
def running(tmp_path, monkeypatch):
    """Two Slurm runs running (long names) and the job states squeue would give."""
    db = tmp_path / "s.db"
    store = fill(db, [dict(row=NAMES[1], status="running"), dict(row=NAMES[3], status="running"),
                      dict(row="LightGCN", metrics={"recall@10": 0.1})], name="notebook")
    from ablate.store import Run

    with store.session() as s:
        for r in s.query(Run).filter(Run.status == "running"):
            r.device, r.host, r.epoch, r.executor, r.job_id = "cuda:0", "gpu-node-17.cluster", 12, "slurm", f"4242_{r.id}"
    from ablate.executors import slurm

    monkeypatch.setattr(slurm, "running_job_states", lambda store, rows: {r["id"]: "CANCELLED" for r in rows})
    return db


@pytest.mark.parametrize("columns", [80, 200, None], ids=["80", "200", "pipe"])
def test_status_never_cuts_a_name_or_state(running, columns):
    out = invoke("status", "--db", running, columns=columns)
    assert "…" not in out and out.startswith(f"{running}: 3 runs, 1 done, 2 running")
    for text in (NAMES[1], NAMES[3], "CANCELLED", "4242_1", "4242_2", "cuda:0"):
        assert text in out, text
    assert out.count("CANCELLED") == 2
    if columns == 80:  # one block per run: '#id name', then its fields
        assert f"#1 {NAMES[1]}" in out and "state: CANCELLED" in out and "┃" not in out
        assert all(cell_len(line) <= 80 for line in out.splitlines() if line.startswith("    "))
    else:  # the whole table
        head = [h.strip() for h in table_lines(out)[1].strip("┃").split("┃")]
        assert head == ["id", "name", "device", "host", "epoch", "running for", "heartbeat", "job", "state"]
        assert "gpu-node-17.cluster" in out
        if columns:
            assert all(cell_len(line) <= columns for line in table_lines(out))


def test_status_leaves_out_optional_columns_before_breaking_rows(tmp_path):
    db = tmp_path / "s.db"
    store = fill(db, [dict(row="ot_1e-7", status="running")], name="exp")
    from ablate.store import Run

    with store.session() as s:
        run = s.query(Run).one()
        run.device, run.host, run.epoch = "cuda:3", "a-rather-long-host-name.gpu-partition.cluster.example.org", 7
    out = invoke("status", "--db", db, columns=80)
    head = [h.strip() for h in table_lines(out)[1].strip("┃").split("┃")]
    assert head == ["id", "name", "device", "epoch", "running for", "heartbeat"]
    assert "ot_1e-7" in out and "cuda:3" in out and "(host left out to fit 80 columns)" in out
    assert all(cell_len(line) <= 80 for line in table_lines(out))
    wide = invoke("status", "--db", db, columns=200)
    assert "a-rather-long-host-name.gpu-partition.cluster.example.org" in wide and "left out" not in wide

"""``ablate run > log``: without a terminal, plain progress lines per run (epoch counter,
loss terms, valid score, elapsed, ETA) and the summary, with no escape codes."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from ablate.cli import app
from ablate.cli.options import parse_duration, parse_log_every
from ablate.progress import SweepView

ROWS = {"SimGCL": {"model": "SimGCL"}, "BPR": {"model": "BPR"}}
DURATION = r"(\d+s|\d+m\d\ds|\d+h\d\dm)"


def test_a_piped_run_prints_a_plain_line_per_run_and_epoch(tmp_path: Path, make_spec):
    spec = make_spec("logged", epochs=3, baselines=ROWS)
    db = tmp_path / "results.db"
    env = dict(os.environ, COLUMNS="60")  # a narrow log: lines must still not wrap or be cut
    res = subprocess.run([sys.executable, "-m", "ablate", "run", str(spec), "--db", str(db), "--jobs", "2",
                          "--log-every", "1ep"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "\x1b" not in out and "\x1b" not in res.stderr
    assert out.splitlines()[0] == "logged: 2 runs, 0 done, 2 to run on 2 slot(s) [cpu]"

    con = sqlite3.connect(db)
    ids = dict(con.execute("SELECT name, id FROM runs"))
    stored = {(name, epoch): (json.loads(losses), valid) for name, epoch, losses, valid in con.execute(
        "SELECT r.name, e.epoch, e.losses, e.valid_score FROM epochs e JOIN runs r ON r.id = e.run_id")}
    con.close()
    for name, terms in (("SimGCL", ("bpr", "reg", "cl")), ("BPR", ("loss",))):
        loss = " ".join(rf"{t} (\S+)" for t in terms)
        pattern = (rf"^#{ids[name]} {name}  epoch (\d)/3  {loss}  valid ndcg@10 (0\.\d{{4}})(?: \(best 0\.\d{{4}}, epoch \d\))?"
                   rf"  elapsed {DURATION}  ETA {DURATION}$")
        lines = [m for m in (re.match(pattern, line) for line in out.splitlines()) if m]
        assert [int(m.group(1)) for m in lines] == [1, 2, 3], out
        for m in lines:
            epoch = int(m.group(1)) - 1
            losses, valid = stored[(name, epoch)]
            assert [m.group(2 + i) for i in range(len(terms))] == [f"{losses[t]:.4g}" for t in terms]  # the stored terms
            assert m.group(2 + len(terms)) == f"{valid:.4f}"  # this epoch's valid score, as stored
        assert lines[-1].group(0).endswith("ETA 0s")
    assert re.search(r"^\[\d/2\] done +#\d SimGCL  recall@10 0\.\d{4}  ndcg@10 0\.\d{4}  \(\d+\.\ds\)$", out, re.M), out
    assert re.search(rf"^finished: 2 done \({DURATION}\)$", out, re.M), out


def test_lines_every_so_many_seconds_say_what_a_run_is_doing(monkeypatch):
    """The time trigger prints between epochs too, with the phase the worker last reported.
    The view reads the test's clock here, so a line is due exactly when the interval is
    over, however busy the machine."""
    import types

    from ablate import progress

    now = [1000.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    buf = io.StringIO()
    view = SweepView(1, {7: "LightGCN_a[b]"}, Console(file=buf, width=40), log_epochs=None, log_seconds=60)

    class Run:
        id, name, config = 7, "LightGCN_a[b]", {"epochs": 300, "valid_metric": "Recall@20"}

    view.queued_to_running(Run)
    view.event({"run_id": 7, "type": "started", "device": "cpu"})
    now[0] += 59
    view.refresh()
    assert buf.getvalue() == ""  # not yet: 59 s of 60
    now[0] += 1
    view.refresh()
    view.event({"run_id": 7, "type": "epoch", "epoch": 0, "epochs": 300, "validates": False, "at": 100.0,
                "train_seconds": 2.0, "losses": {"bpr": 0.5, "reg": 1e-5}})
    view.event({"run_id": 7, "type": "progress", "phase": "train", "epoch": 1, "batch": 120, "batches": 244})
    now[0] += 59
    view.refresh()
    assert len(buf.getvalue().splitlines()) == 1  # the interval runs from the last line
    now[0] += 1
    view.refresh()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"#7 LightGCN_a\[b\]  epoch 0/300 \(data preparation\)  elapsed 1m00s  ETA \?", lines[0])
    assert re.fullmatch(r"#7 LightGCN_a\[b\]  epoch 1/300 \(train batch 120/244\)  bpr 0\.5 reg 1e-05  elapsed 2m00s"
                        r"  ETA 9m58s", lines[1])  # 299 epochs of 2 s
    view.refresh()
    assert len(buf.getvalue().splitlines()) == 2  # not again before the interval is over


def test_log_every_and_stall_timeout_values():
    assert parse_log_every("10ep,60s") == (10, 60.0)
    assert parse_log_every("2m") == (None, 120.0)
    assert parse_log_every("5ep") == (5, None)
    assert parse_log_every("off") == (None, None)
    assert parse_duration("30m", "--stall-timeout") == 1800.0
    assert parse_duration("1.5h", "--stall-timeout") == 5400.0
    assert parse_duration("off", "--stall-timeout", allow_off=True) is None


def test_bad_values_are_one_line_errors(tmp_path: Path, make_spec):
    spec = make_spec("logged", epochs=3, baselines=ROWS)
    db = str(tmp_path / "results.db")
    for option, value, message in (
        ("--log-every", "5 minutes", "--log-every expects epochs and/or a duration, e.g. 5ep, 60s or 10ep,2m, or off; got '5 minutes'"),
        ("--log-every", "0ep", "--log-every expects epochs and/or a duration, e.g. 5ep, 60s or 10ep,2m, or off; got '0ep'"),
        ("--stall-timeout", "-5m", "--stall-timeout expects a duration such as 90s, 30m or 2h, or off, got '-5m'"),
    ):
        res = CliRunner().invoke(app, ["run", str(spec), "--db", db, option, value])
        assert res.exit_code == 2, res.output
        assert res.stderr.splitlines() == [f"ablate: error: {message}"]
        assert not Path(db).exists()  # nothing stored, nothing run


def test_epoch_lines_wait_for_their_valid_score_and_show_the_best_so_far():
    buf = io.StringIO()
    view = SweepView(1, {3: "BPR"}, Console(file=buf), log_epochs=1, log_seconds=None)

    class Run:
        id, name, config = 3, "BPR", {"epochs": 3, "valid_metric": "NDCG@10"}

    view.queued_to_running(Run)
    view.event({"run_id": 3, "type": "started", "device": "cpu"})
    for epoch, validates, score in ((0, True, 0.3), (1, True, 0.2), (2, False, None)):
        view.event({"run_id": 3, "type": "epoch", "epoch": epoch, "epochs": 3, "validates": validates,
                    "at": 10.0 * (epoch + 1), "train_seconds": 10.0, "losses": {"loss": 0.5}})
        assert len(buf.getvalue().splitlines()) == epoch + (0 if validates else 1)  # a validated epoch waits
        if validates:
            view.event({"run_id": 3, "type": "valid", "epoch": epoch, "valid_score": score})
    lines = [re.sub(r"elapsed \S+", "elapsed -", line) for line in buf.getvalue().splitlines()]
    assert lines == [
        "#3 BPR  epoch 1/3  loss 0.5  valid ndcg@10 0.3000  elapsed -  ETA 20s",
        "#3 BPR  epoch 2/3  loss 0.5  valid ndcg@10 0.2000 (best 0.3000, epoch 1)  elapsed -  ETA 10s",
        "#3 BPR  epoch 3/3  loss 0.5  valid ndcg@10 0.2000 (best 0.3000, epoch 1)  elapsed -  ETA 0s",
    ]

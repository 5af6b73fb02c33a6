"""Helpers for the reliability tests: real ``ablate`` processes and a read-only look at
their database while they run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest


def two_rows(make_spec, slow_first: bool) -> Path:
    """The tiny spec with two rows, "quick" (1 epoch) and "slow" (4 epochs: a window to
    kill it in the middle), in the order asked for (the first a baseline, the second a
    variant); ``make_spec`` is the fixture."""
    quick, slow = {"quick": {"model": "BPR"}}, {"slow": {"model": "BPR", "params": {"epochs": 4}}}
    first, second = (slow, quick) if slow_first else (quick, slow)
    return make_spec("two", baselines=first, variants=second)


def ablate_proc(*args: str, cwd: Path) -> subprocess.Popen:
    """``ablate ARGS`` as a real process (its own process group, so the test can kill it
    without touching pytest), stdout/stderr captured."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    return subprocess.Popen(
        [sys.executable, "-c", "from ablate.cli import main; main()", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def ablate_call(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = ablate_proc(*args, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def query(db: str, sql: str, *params) -> list[tuple]:
    """Read the store the way an outside observer would: plain sqlite3, read-only."""
    if not Path(db).exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def runs_by_name(db: str) -> dict[str, dict]:
    cols = ["id", "name", "status", "pid", "owner", "attempts", "epoch", "error", "ended_at"]
    return {r[1]: dict(zip(cols, r)) for r in query(db, f"SELECT {', '.join(cols)} FROM runs")}


def training(db: str, name: str) -> dict | None:
    """The run named ``name`` if it is training (running, its worker's pid and at least
    one epoch stored), else None."""
    run = runs_by_name(db).get(name)
    if run and run["status"] == "running" and run["pid"] and run["epoch"] is not None:
        return run
    return None


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 0.2):
    """Poll until ``predicate()`` is truthy; fail with ``what`` (and the process's output)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ablate exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

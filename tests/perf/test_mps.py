"""``ablate run --mps``: a private MPS daemon around a packed sweep.

The daemon is NVIDIA's and cannot exist on a CPU machine, so a stand-in
``nvidia-cuda-mps-control`` on PATH records how it is called (``-d`` to start, ``quit``
on stdin to stop) and makes the control pipe the real one makes, and a stand-in
``nvidia-smi`` lists a GPU. The sweep itself is real: two ml-100k runs on that GPU's
slots, whose workers must see the daemon's folders (they mark their device ``+mps``)
and then end ``failed``, as this CPU build of torch cannot use the GPU.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from ablate.cli import app

FAKE_CONTROL = """#!/usr/bin/env bash
if [ "${1:-}" = "-d" ]; then
  echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$FAKE_MPS_LOG"
  [ -n "${FAKE_MPS_FAIL:-}" ] && { echo "An instance of this daemon is already running" >&2; exit 1; }
  echo "env CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} CUDA_MODULE_LOADING=${CUDA_MODULE_LOADING-unset}" >> "$FAKE_MPS_LOG"
  [ -n "${FAKE_MPS_HANG:-}" ] && { echo "[server] cannot open /dev/nvidia0" > "$CUDA_MPS_LOG_DIRECTORY/control.log"; exit 0; }
  touch "$CUDA_MPS_PIPE_DIRECTORY/control"
  exit 0
fi
read -r cmd
echo "$cmd $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_LOG"
"""

SECOND_RUN = {"v": {"model": "BPR", "params": {"learning_rate": 0.002}}}  # a variant beside the tiny BPR: two runs


def _fake_daemon(tmp_path: Path) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE_CONTROL)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_MPS_LOG": str(tmp_path / "mps.log")}


def test_mps_daemon_runs_around_the_packed_sweep(tmp_path, make_spec, fake_gpus):
    env = _fake_daemon(tmp_path)
    spec = make_spec(variants=SECOND_RUN)
    db = tmp_path / "r.db"
    result = CliRunner().invoke(app, ["run", str(spec), "--db", str(db), "--gpus", "0", "--per-gpu", "2", "--mps"],
                                env={**env, "CUDA_VISIBLE_DEVICES": "0"})
    assert result.exit_code == 1, result.output  # both runs failed: no usable GPU here
    log = (tmp_path / "mps.log").read_text().splitlines()
    assert len(log) == 3, log
    verb, pipe, logdir = log[0].split()
    assert verb == "start" and Path(pipe).name == "pipe" and Path(logdir).name == "log"
    # the daemon numbers GPUs physically, as the workers do; its clients load kernels eagerly
    assert log[1] == "env CUDA_VISIBLE_DEVICES=unset CUDA_MODULE_LOADING=EAGER"
    assert "CUDA_MODULE_LOADING" not in os.environ and "CUDA_MPS_PIPE_DIRECTORY" not in os.environ  # restored
    assert log[2] == f"quit {pipe}"  # the same daemon, quit at the end
    assert not Path(pipe).exists()  # its folder is removed
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ  # the coordinator's environment is restored
    with closing(sqlite3.connect(db)) as c:
        got = c.execute("select status, device from runs").fetchall()
    assert got == [("failed", "cuda:0+mps"), ("failed", "cuda:0+mps")]  # the workers were its clients


def test_mps_failures_are_one_line_errors_and_run_nothing(tmp_path, tiny_spec, fake_gpus):
    gpu_only = fake_gpus["PATH"].split(os.pathsep)[0]  # nvidia-smi, but no MPS control
    env = _fake_daemon(tmp_path)
    spec = tiny_spec
    db = tmp_path / "r.db"
    runner = CliRunner()
    failed = runner.invoke(app, ["run", str(spec), "--db", str(db), "--gpus", "0", "--mps"], env={**env, "FAKE_MPS_FAIL": "1"})
    assert failed.exit_code == 2
    assert failed.output.strip() == (
        "ablate: error: the MPS daemon did not start (exit 1): An instance of this daemon is already running")
    on_cpu = runner.invoke(app, ["run", str(spec), "--db", str(db), "--cpu", "--mps"], env=env)
    assert on_cpu.exit_code == 2 and on_cpu.output.strip() == "ablate: error: --mps needs GPUs, and these runs go to the CPU"
    missing = runner.invoke(app, ["run", str(spec), "--db", str(db), "--gpus", "0", "--mps"],
                            env={**env, "PATH": gpu_only})
    assert missing.exit_code == 2 and "nvidia-cuda-mps-control" in missing.output and "not found" in missing.output
    if db.exists():
        with closing(sqlite3.connect(db)) as c:
            assert c.execute("select count(*) from runs").fetchone() == (0,)


def test_a_daemon_that_never_serves_is_quit_and_its_log_quoted(tmp_path, monkeypatch):
    from ablate.executors.mps import MPSDaemon, MPSError

    for key, val in {**_fake_daemon(tmp_path), "FAKE_MPS_HANG": "1"}.items():
        monkeypatch.setenv(key, val)
    daemon = MPSDaemon(tmp_path / "mps", start_timeout=0.3)
    try:
        daemon.start()
    except MPSError as exc:
        message = str(exc)
    assert message == "the MPS daemon made no control pipe within 0.3 s (its log says: [server] cannot open /dev/nvidia0)"
    assert (tmp_path / "mps.log").read_text().splitlines()[-1].startswith("quit ")  # not left running
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_wait_ready_holds_until_every_worker_is_ready_and_keeps_other_events(stand_in_worker):
    """Under --mps no run starts while a worker still loads its CUDA libraries."""
    import threading
    import time

    from ablate.executors.local import LocalExecutor

    slots, ends = zip(*(stand_in_worker() for _ in range(2)))
    ex = LocalExecutor(list(slots))
    ends[0].send({"type": "ready"})
    ends[1].send({"type": "note", "run_id": None})

    sent = threading.Event()

    def late_ready():
        time.sleep(0.5)
        sent.set()
        ends[1].send({"type": "ready"})

    threading.Thread(target=late_ready).start()
    ex.wait_ready(timeout=10)
    assert sent.is_set()  # it waited for the slow worker's ready
    assert ex.poll(timeout=0) == [{"type": "note", "run_id": None}]  # nothing else was lost
    ex.shutdown(kill=True)
    assert all(s.process is None for s in slots)

"""Fixtures shared by every test area: the tiny real spec and a database path.

Keep this small and generic; an area's own fixtures go in ``tests/<area>/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import gates  # the one CI gate
from tests.specs import write_tiny


def _skip_reason(longrepr) -> str:
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test is a failed one (:mod:`gates`)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and gates.under_ci():
        report.outcome = "failed"
        report.longrepr = gates.failure(_skip_reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under CI=true a module that skips as a whole (``pytest.importorskip`` at its top)
    is a collection error."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and gates.under_ci():
        report.outcome = "failed"
        report.longrepr = gates.failure(_skip_reason(report.longrepr))


@pytest.fixture
def make_spec(tmp_path: Path):
    """``make_spec(name="tiny", **parts) -> Path``: :func:`tests.specs.tiny_yaml` with
    those parts, written to ``NAME.yaml`` in the test's folder."""

    def make(name: str = "tiny", **parts) -> Path:
        return write_tiny(tmp_path, name, **parts)

    return make


@pytest.fixture
def tiny_spec(make_spec) -> Path:
    """The tiny spec as it is (``tiny.yaml``): one BPR run, 1 epoch, embedding 8, a few
    seconds of training."""
    return make_spec()


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Path of a results database in the test's own folder (not created yet)."""
    return str(tmp_path / "results.db")


@pytest.fixture
def stand_in_worker():
    """``make(gpu="0", run_id=None) -> (Slot, pipe end)``: an executor slot whose worker is
    a real process on a real pipe that does nothing; the test speaks for it through the
    pipe end (what a worker reports on a GPU that cannot exist here). Killed afterwards."""
    import multiprocessing as mp
    import time

    from ablate.devices import Slot

    ctx = mp.get_context("spawn")
    procs = []

    def make(gpu="0", run_id=None):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=time.sleep, args=(60,), daemon=True)
        proc.start()
        procs.append(proc)
        return Slot(gpu=gpu, threads=4, label=f"cuda:{gpu}", process=proc, conn=parent,
                    runs=[] if run_id is None else [run_id]), child

    yield make
    for proc in procs:
        proc.kill()


# What the real nvidia-smi prints for the two queries ablate makes (GPU count and MIG mode;
# memory), for GPUs that cannot exist here. The workers then really are handed those GPU
# ids, record their device as ``cuda:N`` and end ``failed``: a CPU build of torch cannot
# use them (``ablate.worker`` says so instead of training on the CPU under a cuda label).
FAKE_NVIDIA_SMI = """#!/bin/bash
n=${FAKE_GPUS:-2}
mem=${FAKE_GPU_MB:-81920}
for ((i = 0; i < n; i++)); do
  case "$*" in
    *memory.total*) echo "$i, $mem" ;;
    *) echo "$i, Disabled" ;;
  esac
done
"""


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch) -> dict:
    """A stand-in ``nvidia-smi`` listing ``FAKE_GPUS`` (2) GPUs of ``FAKE_GPU_MB`` MiB,
    first on PATH (for this process and the processes it starts). Returns the environment
    it set, for a test that starts a subprocess with an environment of its own."""
    import stat

    bindir = tmp_path / "fake-gpus-bin"
    bindir.mkdir()
    exe = bindir / "nvidia-smi"
    exe.write_text(FAKE_NVIDIA_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    import os

    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return env

"""Helpers of the Slurm executor tests: the spec, CLI calls, event files, processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from ablate.cli import app

from tests.specs import tiny_yaml
from tests.stored import FullMetrics, full_metrics

# Two LightGCN runs (1 and 2 layers): a baseline and one variant, 1 epoch each.
ROWS = {"baselines": {"LightGCN": {"model": "LightGCN", "params": {"n_layers": 1}}},
        "variants": {"deeper": {"model": "LightGCN", "params": {"n_layers": 2}}}}
SPEC = tiny_yaml("slurmtiny", **ROWS)

# The same two runs trained for SLOW_EPOCHS epochs (validated once, at the end): for tests
# that requeue or cancel a task while it trains. Slurm stops a task with SIGTERM, which
# submitit lets pass, and SIGKILL KillWait seconds later; a one-epoch run of SPEC can end
# within that on a quiet machine, and the stop would then land after the run.
SLOW_EPOCHS = 20
SLOW_SPEC = tiny_yaml("slurmslow", epochs=SLOW_EPOCHS, eval_step=SLOW_EPOCHS, **ROWS)

SLURM_ARGS = ["--executor", "slurm", "--gpus-per-job", "0", "--array-parallelism", "2", "--time", "0:10:00"]


def cli(*args: str, code: int | None = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def metrics_by_key(db: Path) -> dict[str, FullMetrics]:
    """Each done run's metrics by run key at full precision: (split, name) -> (the
    unrounded mean, the per-user values), so that equal dicts are equal bit for bit."""
    return full_metrics(db)


def wait_for_event(folder: Path, run_id: int, kind: str, timeout: float = 120.0) -> dict:
    """The first ``kind`` event a job wrote for ``run_id`` under the sweep folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((folder / str(run_id)).glob("events.*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") == kind:
                    return ev
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event for run {run_id} under {folder} within {timeout}s")


def wait_dead(pid: int, timeout: float = 60.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive after {timeout}s")



# ---------------------------------------------------------------------------- the real services

SERVICES_ENV = Path(os.environ.get("ABLATE_SERVICES_DIR", "/var/lib/ablate-services")) / "services.env"


def services_env() -> dict[str, str]:
    """The connection facts ``ci/services.sh up`` wrote (the environment wins over its file)."""
    facts: dict[str, str] = {}
    if SERVICES_ENV.is_file():
        for line in SERVICES_ENV.read_text().splitlines():
            key, sep, value = line.removeprefix("export ").partition("=")
            if sep:
                facts[key.strip()] = value.strip()
    facts.update({k: v for k, v in os.environ.items() if k.startswith("ABLATE_TEST_")})
    return facts



def real_args(partition: str, folder: Path, *more: str, time_limit: str = "0:10:00") -> list[str]:
    """``ablate run`` options of a CPU sweep on the one-node cluster of ci/services.sh."""
    return ["--executor", "slurm", "--partition", partition, "--gpus-per-job", "0", "--array-parallelism", "2",
            "--time", time_limit, "--slurm-folder", str(folder), *more]


def ablate_cmd(*args) -> list[str]:
    import sys

    return [sys.executable, "-c", "from ablate.cli import main; main()", *[str(a) for a in args]]


def ablate(*args, cwd: Path, timeout: float = 300.0, code: int | None = 0):
    """``ablate ARGS`` in its own process (a coordinator of its own), bounded by ``timeout``."""
    import subprocess

    done = subprocess.run(ablate_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    return done


def sacct_state(job_id: str) -> str:
    """The job's state as accounting has it now ("" before its record exists)."""
    import subprocess

    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"], capture_output=True,
                         text=True, timeout=30).stdout
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id:
            return state.split()[0] if state else ""
    return ""


def wait_state(job_id: str, states: set[str], timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = sacct_state(job_id)
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"slurm job {job_id} is {state or 'unknown'}, not {'/'.join(sorted(states))}, after {timeout}s")


def events(folder: Path, run_id: int) -> list[dict]:
    """Every complete event line the jobs of ``run_id`` wrote, file by file."""
    out = []
    for path in sorted((folder / str(run_id)).glob("events.*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out

"""GPU detection without torch: ``nvidia-smi`` answers where it can, torch where it cannot.

There is no GPU here, so a stand-in ``nvidia-smi`` on PATH prints what the real one
prints for ``--query-gpu=index,mig.mode.current --format=csv,noheader``. Each case runs
in a fresh interpreter, to see whether torch was imported.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

PROBE = "import json, sys; from ablate.devices import visible_gpus; print(json.dumps([visible_gpus(), 'torch' in sys.modules]))"


def _probe(tmp_path, smi_rows: str, visible: str | None):
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/usr/bin/env bash\nprintf '{smi_rows}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


FOUR = "0, Disabled\\n1, Disabled\\n2, Disabled\\n3, Disabled\\n"


@pytest.mark.parametrize("visible,expected", [
    (None, ["0", "1", "2", "3"]),
    ("2,3", ["2", "3"]),
    ("3,1", ["3", "1"]),
    ("1,7,2", ["1"]),  # CUDA stops at the first id that does not exist
    ("", []),  # set but empty: no GPU
    ("0,0", []),  # a repeated id hides every GPU
    ("0,,1", ["0"]),
    ("-1", []),
])
def test_nvidia_smi_counts_gpus_without_importing_torch(tmp_path, visible, expected):
    assert _probe(tmp_path, FOUR, visible) == [expected, False]


@pytest.mark.parametrize("rows,visible", [
    ("0, Enabled\\n", None),  # MIG: CUDA sees instances, which only torch can count
    (FOUR, "GPU-5f1c0e2a-0000-0000-0000-000000000000"),  # UUIDs
    ("No devices were found\\n", None),
])
def test_anything_else_is_asked_of_torch(tmp_path, rows, visible):
    gpus, torch_imported = _probe(tmp_path, rows, visible)
    assert torch_imported and gpus == []  # torch here is a CPU build: no GPU


@pytest.mark.parametrize("var", ["", " ", "0,0", "0,,1", "1gpu2,2ampere", "-1", "-0,1", "2,3", "+2,1", "1, 2", "0,-1,2",
                                 "abc", "GPU-a,GPU-b", "GPU-a,GPU-a", "MIG-x,0"])
def test_visible_devices_are_parsed_as_torch_parses_them(monkeypatch, var):
    import torch.cuda

    from ablate.devices import parse_visible_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", var)
    assert parse_visible_devices(var) == torch.cuda._parse_visible_devices()


def test_a_run_given_a_gpu_that_torch_cannot_use_fails_instead_of_using_the_cpu(tmp_path):
    """nvidia-smi may list GPUs that this torch (a CPU build, say) cannot use: RecBole would
    then quietly train on the CPU under a cuda:N label. The worker says so instead."""
    runner = os.path.join(os.path.dirname(__file__), "perf", "run_tasks.py")
    config = {"model": "BPR", "dataset": "ml-100k", "epochs": 1, "embedding_size": 8, "train_batch_size": 4096}
    task = {"run_id": 1, "model": "BPR", "config": config, "run_dir": str(tmp_path / "run"), "gpu": "0"}
    (tmp_path / "tasks.json").write_text(json.dumps([task]))
    subprocess.run([sys.executable, runner, str(tmp_path / "tasks.json"), str(tmp_path / "out.json")],
                   check=True, cwd=tmp_path, timeout=300)
    (events,) = json.loads((tmp_path / "out.json").read_text())["runs"]
    finished = [e for e in events if e.get("type") == "finished"]
    assert finished and finished[-1]["status"] == "failed"
    assert finished[-1]["error"].startswith("given GPU 0, but torch ") and "cannot use CUDA here" in finished[-1]["error"]

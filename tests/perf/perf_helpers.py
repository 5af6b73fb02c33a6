"""Shared by the perf tests that run worker tasks in a fresh process (run_tasks.py) and
compare what the runs computed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("run_tasks.py")


def task(run_id: int, config: dict, root: Path) -> dict:
    return {"run_id": run_id, "model": config["model"], "config": config, "run_dir": str(root / "runs" / str(run_id))}


def run_tasks(tasks: list[dict], root: Path, name: str, *flags: str) -> dict:
    """Run ``tasks`` one after another in one fresh process (a warm worker); its dump."""
    src, dst = root / f"{name}.json", root / f"{name}.out.json"
    src.write_text(json.dumps(tasks))
    subprocess.run([sys.executable, str(RUNNER), str(src), str(dst), *flags], check=True, cwd=root, timeout=900)
    return json.loads(dst.read_text())


def numbers(events: list[dict]) -> list:
    """Everything a run reports that depends on the computation (not on time or pid): the
    loss terms and valid scores of each epoch, and at the end the metrics as RecBole
    rounded them, their unrounded means (``exact``) and each user's values (``per_user``,
    the encoded float32 bytes), so that two equal lists are equal at full precision."""
    out = []
    for e in events:
        if e["type"] == "epoch":
            out.append(("epoch", e["epoch"], e["losses"]))
        elif e["type"] == "valid":
            out.append(("valid", e["epoch"], e["valid_score"], e["valid"]))
        elif e["type"] == "finished":
            out.append(("finished", e["status"], e.get("error"), e.get("metrics"), e["epoch"], e["best_epoch"],
                        e.get("exact"), e.get("per_user")))
    return out

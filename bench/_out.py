"""Where the benchmarks write their JSON results: ``$OUT`` if set, else ``bench/out``."""

from __future__ import annotations

import json
import os
from pathlib import Path

OUT = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "out")


def write_json(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2, default=str))
    return path

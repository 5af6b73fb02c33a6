"""Option aliases shared by the commands, so each is spelled and documented once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


DbOpt = Annotated[
    str,
    typer.Option("--db", envvar="ABLATE_DB", help="Results store: a SQLite file or any SQLAlchemy URL.", show_default=True),
]
DB_DEFAULT = "results.db"
SpecArg = Annotated[Path, typer.Argument(help="Experiment spec (YAML).", show_default=False)]
# Where runs execute: the same four options on every command that trains (run, rerun, search).
GpusOpt = Annotated[Optional[str], typer.Option(help="GPU indices to use, e.g. 0,1 (default: all visible).")]
JobsOpt = Annotated[Optional[int], typer.Option(help="Parallel runs on the CPU when there is no GPU.")]
CpuOpt = Annotated[bool, typer.Option("--cpu", help="Ignore GPUs and run on the CPU.")]
WorkdirOpt = Annotated[Optional[Path], typer.Option(help="Folder for run logs and checkpoints.")]
OverrideOpt = Annotated[
    Optional[list[str]],
    typer.Option("--override", "-o", help="key=value applied to every run (YAML value: 1e-7, [10,20], true).", show_default=False),
]



def parse_overrides(items: list[str] | None) -> dict:
    """``["epochs=1", "topk=[10,20]"]`` -> ``{"epochs": 1, "topk": [10, 20]}``."""
    out: dict = {}
    if not items:
        return out
    from ablate.errors import UsageError
    from ablate.spec import parse_scalar  # pydantic and yaml: only when there is something to parse

    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-o expects key=value, got {item!r}")
        out[key.strip()] = parse_scalar(value)
    return out

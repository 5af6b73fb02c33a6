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
PerGpuOpt = Annotated[str, typer.Option("--per-gpu", help="Runs sharing one GPU: a number, or 'auto' (by measured memory).")]
WarmOpt = Annotated[bool, typer.Option(help="Reuse worker processes and their parsed dataset across runs (--no-warm: a fresh process per run).")]
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


def local_options(gpus: str | None, per_gpu: str, jobs: int | None, cpu: bool, warm: bool = True, mps: bool = False):
    """``--gpus``, ``--per-gpu``, ``--jobs``, ``--cpu`` (and ``--warm``, ``--mps``) as the
    API's :class:`ablate.api.Local`, checked once."""
    from ablate.api import Local

    return Local(gpus=gpus, per_gpu=per_gpu, jobs=jobs, cpu=cpu, warm=warm, mps=mps)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str, allow_off: bool = False) -> float | None:
    """Seconds from ``90``, ``90s``, ``30m``, ``1.5h`` or ``2d`` (None for ``off`` where allowed)."""
    import re

    from ablate.errors import UsageError

    value = text.strip().lower()
    if allow_off and value in ("off", "none", "0"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([smhd]?)", value)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{option} expects a duration such as 90s, 30m or 2h{', or off' if allow_off else ''}, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_log_every(text: str) -> tuple[int | None, float | None]:
    """``--log-every``: (epochs, seconds) from ``5ep``, ``60s``, ``10ep,2m`` or ``off``;
    a trigger not given is off."""
    import re

    from ablate.errors import UsageError

    if text.strip().lower() == "off":
        return None, None
    epochs = seconds = None
    for part in (p.strip().lower() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*(?:ep|epochs?)", part)
        if m and int(m.group(1)) > 0 and epochs is None:
            epochs = int(m.group(1))
            continue
        try:
            if seconds is not None:
                raise UsageError("")
            seconds = parse_duration(part, "--log-every")
        except UsageError:
            raise UsageError(f"--log-every expects epochs and/or a duration, e.g. 5ep, 60s or 10ep,2m, or off; got {text!r}") from None
    return epochs, seconds

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
# Where runs execute on a cluster: the same options on run and search.
ExecutorOpt = Annotated[str, typer.Option("--executor", help="Where runs execute: local, or slurm (job arrays through submitit).")]
PartitionOpt = Annotated[Optional[str], typer.Option(help="Slurm partition (--executor slurm).")]
GpusPerJobOpt = Annotated[int, typer.Option("--gpus-per-job", help="GPUs per Slurm job; --per-gpu runs share each (0: CPU jobs).")]
TimeOpt = Annotated[str, typer.Option("--time", help="Slurm time limit per job, [D-]HH:MM:SS.")]
ArrayParallelismOpt = Annotated[Optional[int], typer.Option("--array-parallelism", help="Slurm jobs of the array running at once.")]
SlurmFolderOpt = Annotated[Optional[Path], typer.Option("--slurm-folder", help="Shared folder for job files and results (default: WORKDIR/slurm).")]
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


def where_options(executor: str, *, gpus: str | None = None, per_gpu: str = "1", jobs: int | None = None,
                  cpu: bool = False, warm: bool = True, mps: bool = False, partition: str | None = None,
                  gpus_per_job: int = 1, time: str = "4:00:00", array_parallelism: int | None = None,
                  slurm_folder: Path | None = None, wait: bool = True):
    """``--executor`` and the options that go with it as the API's :class:`ablate.api.Local`
    or :class:`ablate.api.Slurm`, checked once."""
    from ablate.api import Slurm
    from ablate.errors import OptionError

    if executor == "slurm":
        if mps:
            raise OptionError("mps", "is for runs on this machine's GPUs (--executor local)")
        return Slurm(partition=partition, gpus_per_job=gpus_per_job, per_gpu=per_gpu, time=time,
                     array_parallelism=array_parallelism, folder=slurm_folder, wait=wait)
    if executor == "local":
        return local_options(gpus, per_gpu, jobs, cpu, warm=warm, mps=mps)
    raise OptionError("executor", f"expects local or slurm, got {executor!r}")


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

"""Where runs execute, as typed options checked once when they are made.

``Local`` (this machine: its GPUs, or CPU workers) and ``Slurm`` (a cluster, through
submitit) are what :func:`ablate.api.run`, :func:`~ablate.api.rerun` and
:func:`~ablate.api.search` take as ``on=``. A bad value raises
:class:`~ablate.errors.OptionError` naming the option (``per_gpu 0: ...``) as soon as the
object is made, before anything reads a spec or opens a store; the CLI builds the same
objects from its flags and reports the flag instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from ablate.errors import OptionError

# The store every function reads and writes unless told otherwise (the CLI's --db default).
DEFAULT_DB = "results.db"
# CPU workers when none is asked for: one single-threaded run per core beat one run on all
# cores (bench/sweep.py, 2 cores); past 4 the dataset copies cost more memory than they gain.
MAX_DEFAULT_JOBS = 4


def _gpu_list(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    wanted = tuple(g.strip() for g in items if g.strip())
    if not wanted:
        raise OptionError("gpus", "expects ids like 0,1")
    return wanted


def _per_gpu(value) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise OptionError("per_gpu", f"expects a number or 'auto', got {value!r}") from None
    if n < 1:
        raise OptionError("per_gpu", "must be at least 1")
    return n


@dataclass(frozen=True)
class Local:
    """Runs on this machine.

    ``gpus``: logical GPU indices to use (``"0,1"`` or ``[0, 1]``; default every visible
    GPU); ``per_gpu``: runs sharing one GPU, or ``"auto"`` (as many as fit by the memory
    runs report); ``jobs``: CPU workers when there is no GPU (default: one per core, at
    most 4); ``cpu``: ignore GPUs; ``warm``: reuse worker processes and their parsed data
    across runs; ``mps``: share each GPU through a private CUDA MPS daemon.
    """

    gpus: Union[str, Sequence[int | str], None] = None
    per_gpu: Union[int, str] = 1
    jobs: int | None = None
    cpu: bool = False
    warm: bool = True
    mps: bool = False

    def __post_init__(self):
        object.__setattr__(self, "gpus", _gpu_list(self.gpus))
        object.__setattr__(self, "per_gpu", _per_gpu(self.per_gpu))
        if self.jobs is not None and int(self.jobs) < 1:
            raise OptionError("jobs", "must be at least 1")

    def slots(self):
        """The slots of this machine these options give (GPUs found now)."""
        from ablate import devices

        per_gpu = 1 if self.per_gpu == "auto" else int(self.per_gpu)  # auto: refined by measured memory
        available = [] if self.cpu else devices.visible_gpus()
        wanted = list(self.gpus) if self.gpus is not None else None
        jobs = self.jobs
        if self.cpu or not available:
            if wanted:
                raise OptionError("gpus", "no GPU is visible here (for CPU runs, give the number of jobs instead)",
                                  value=",".join(wanted))
            wanted = []
            if jobs is None:
                jobs = max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))
        return devices.make_slots(wanted, per_gpu, jobs, available)

    def countable_now(self) -> bool:
        """Whether :meth:`slots` can answer without importing torch (see
        :func:`ablate.devices.countable_without_torch`)."""
        from ablate.devices import countable_without_torch

        return self.cpu or countable_without_torch()


@dataclass(frozen=True)
class Slurm:
    """Runs as a Slurm job array through submitit.

    ``partition``; ``gpus_per_job`` (0: CPU jobs); ``per_gpu``: runs sharing each GPU of a
    job; ``time``: each job's limit, ``[D-]HH:MM:SS``; ``array_parallelism``: jobs of the
    array running at once; ``folder``: shared folder for job files and events (default
    ``<workdir>/slurm``); ``wait``: watch the jobs and write results as they finish
    (False: submit and return; ``ablate.api.collect`` gathers them later).
    """

    partition: str | None = None
    gpus_per_job: int = 1
    per_gpu: Union[int, str] = 1
    time: str = "4:00:00"
    array_parallelism: int | None = None
    folder: Path | None = None
    wait: bool = True
    minutes: int = field(init=False, default=0)  # ``time`` in whole minutes

    def __post_init__(self):
        from ablate.executors.slurm import parse_time

        per_gpu = self.per_gpu
        if per_gpu == "auto":
            per_gpu = 1  # a job learns nothing about memory before it starts: one run per GPU
        elif not str(per_gpu).isdigit() or int(per_gpu) < 1:
            raise OptionError("per_gpu", f"expects a number of runs per job and GPU, got {per_gpu!r}")
        object.__setattr__(self, "per_gpu", int(per_gpu))
        if self.gpus_per_job < 0:
            raise OptionError("gpus_per_job", "must be 0 or more")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise OptionError("array_parallelism", "must be at least 1")
        object.__setattr__(self, "minutes", parse_time(self.time))
        if self.folder is not None:
            object.__setattr__(self, "folder", Path(self.folder))

    def cluster(self) -> str:
        """Which submitit executor to use here (``ABLATE_SUBMITIT_CLUSTER``; Slurm by
        default, which needs ``sbatch`` on PATH)."""
        from ablate.executors.slurm import cluster_from_env

        return cluster_from_env()


Where = Union[Local, Slurm]

"""What crosses a process boundary: the tasks a coordinator sends and the events a worker
sends back.

They stay plain dicts on the wire: a dict travels equally well over a multiprocessing
pipe (local executor) and as a JSON line in a shared folder (Slurm), and a coordinator
reads the lines of an older job unchanged. The types below name every key each side
reads, so a key written and read nowhere (or read and written nowhere) shows up here
and in a type checker, not in a run that ends oddly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict, Union


class _TaskRequired(TypedDict):
    run_id: int
    model: str
    config: dict[str, Any]
    run_dir: str


class Task(_TaskRequired, total=False):
    """One run for a worker. The coordinator fills the first keys (:func:`make_task`);
    the executor adds where it runs (``gpu``, ``threads``)."""

    key: str
    name: str
    keep_checkpoints: bool
    verdicts: bool  # ``ablate search``: wait for the coordinator's go-on/prune after each valid event
    gpu: int | str | None  # a physical GPU id, or None for the CPU
    threads: int | None  # the slot's share of the cores
    beat_every: float | None  # seconds between progress events; None: none (a Slurm job's file)
    fused: list[int]  # set by a fused group: the run ids trained side by side with this one


class GroupTask(TypedDict):
    """Runs that train side by side in one worker (``ablate run --fuse``)."""

    members: list[Task]


Work = Union[Task, GroupTask]


class _Base(TypedDict, total=False):
    run_id: int
    host: str
    pid: int
    job_id: str  # added by the Slurm executor from the events file's name


class Started(_Base, total=False):
    type: Literal["started"]
    device: str  # "cpu", "cuda:1", "cuda:0+mps", "cpu+fused4"
    log_path: str
    mps: bool
    fused: list[int] | None


class Progress(_Base, total=False):
    type: Literal["progress"]
    phase: str  # setup | model | train | valid | test
    epoch: int | None
    batch: int
    batches: int | None


class EpochEvent(_Base, total=False):
    type: Literal["epoch"]
    epoch: int
    epochs: int | None
    validates: bool
    losses: dict[str, float]
    train_seconds: float
    at: float
    peak_mem_mb: float | None
    threads: int


class Valid(_Base, total=False):
    type: Literal["valid"]
    epoch: int
    valid_score: float
    valid: dict[str, float]


class Finished(_Base, total=False):
    """A run's end: the one event that changes its status. Executors make it too, for a
    run whose worker or job ended without saying (``interrupted``, ``timeout``)."""

    type: Literal["finished"]
    status: str
    epoch: int | None
    best_epoch: int | None
    wall_seconds: float
    metrics: dict[str, dict[str, float]]  # split -> metric -> RecBole's value (rounded to its decimal place)
    exact: dict[str, dict[str, float]]  # split -> metric -> the unrounded mean over users
    per_user: dict[str, str]  # split -> ablate.peruser.encode(...) as base64
    versions: dict[str, str]
    peak_mem_mb: float | None
    error: str
    retire: bool  # the worker cannot run anything again (a lost CUDA context)


class Ready(TypedDict):
    type: Literal["ready"]
    pid: int


class Verdict(TypedDict):
    """The coordinator's answer to a search trial's valid event."""

    type: Literal["verdict"]
    run_id: int
    stop: bool


Event = Union[Started, Progress, EpochEvent, Valid, Finished]

# Keys of a finished event that the store keeps as columns of the run.
RESULT_FIELDS = ("epoch", "best_epoch", "wall_seconds", "versions", "peak_mem_mb")


def make_task(run, workdir: Path, keep_checkpoints: bool = False) -> Task:
    """The task for a stored run (``ablate.store.Run``): its config and its own folder."""
    return {
        "run_id": run.id, "key": run.key, "name": run.name, "model": run.model, "config": run.config,
        "run_dir": str((Path(workdir) / "runs" / str(run.id)).resolve()), "keep_checkpoints": keep_checkpoints,
    }


def ended(run_id: int, status: str, error: str, **extra) -> Finished:
    """A ``finished`` event for a run that could not say it itself."""
    return {"type": "finished", "run_id": run_id, "status": status, "error": error, **extra}

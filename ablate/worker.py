"""Execute one run with RecBole. With :mod:`ablate.fastpath`, which it calls for the epochs,
the only module of ablate that imports RecBole.

:func:`execute` is handed a *task* (:class:`ablate.messages.Task`: run id, model, resolved
config, run folder, device) and reports *events* (:mod:`ablate.messages`) through
``emit``: ``started``, ``progress``, ``epoch``, ``valid`` and, last, ``finished`` with the
status and metrics. They are plain dicts, which travel equally well over a
multiprocessing pipe (local executor) and as JSON lines on shared storage (Slurm), so
every executor runs this same code, through the loop of :mod:`ablate.serve`.

RecBole keeps global state (logging handlers, ``sys.argv`` overrides, RNGs, the
current directory for tensorboard and checkpoints). Each run here gets its own log file,
its own checkpoint folder, a clean ``sys.argv``, re-seeded RNGs, a fresh model and
trainer — so a warm worker that runs many configs in one process gives the same numbers
as a cold process (``tests/test_warm.py``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import platform
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ablate.capture import EvaluationCapture
from ablate.messages import Task
from ablate.sharing import DATA_KEYS

Emit = Callable[[dict], None]

# Data settings that decide what ``create_dataset`` builds; the parsed dataset is cached
# per worker process under a hash of these (see ``_dataset``).
_DATASET_CACHE: dict[str, Any] = {}
# Normalised adjacency matrices of graph models, per process, keyed by the model's method
# and a hash of the training interactions (see ``_adjacency_cache``); hits are counted so
# the warm == cold test can tell that the cache was really used.
_ADJ_CACHE: dict[tuple, Any] = {}
ADJ_STATS = {"hits": 0, "misses": 0}
# The train/valid/test dataloaders as ``data_preparation`` builds them, before any
# iteration, keyed by the settings RecBole's data code reads (see ``_prepared``).
_LOADER_CACHE: dict[str, tuple] = {}
LOADER_STATS = {"hits": 0, "misses": 0}
# Seconds between a worker's progress events while batches run (see :class:`Pulse`).
BEAT_EVERY = 1.0


class Pruned(Exception):
    """The coordinator answered a valid event with "stop now" (``ablate search``'s pruner)."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch + 1}")
        self.epoch = epoch


class NanLoss(Exception):
    def __init__(self, epoch: int):
        super().__init__(f"training loss is NaN at epoch {epoch}")
        self.epoch = epoch


class _NullWriter:
    """Stands in for tensorboard's SummaryWriter: ablate stores epochs in its database,
    and RecBole's writer would create ``log_tensorboard/`` in the current directory."""

    def __getattr__(self, _name):
        return lambda *a, **k: None


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions that decide a run's numbers. Read from package metadata, not by importing:
    importing torch_geometric only to read its version cost 2.8 s per process."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "recbole", "numpy", "scipy", "pandas", "torch_geometric"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def run_versions(model: str) -> dict[str, str]:
    """:func:`versions` and the implementation that trained ``model`` (:mod:`ablate.versions`),
    so that reports can tell a run made by older code from a current one."""
    from ablate import versions as implementation

    return {**versions(), "implementation": implementation.label(model)}


def prepare_process(threads: int | None) -> None:
    """Once per process: compat patches, thread count, no tensorboard."""
    # Before torch loads OpenMP: spinning threads that wait for a busy core made 2-thread
    # runs ~40x slower on a loaded 2-core machine; passive waiting costs nothing measurable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ablate import compat

    compat.apply()
    import recbole.trainer.trainer as rt
    import torch

    rt.get_tensorboard = lambda logger: _NullWriter()
    if threads:
        torch.set_num_threads(int(threads))


@contextlib.contextmanager
def torch_globals():
    """Put back the process-wide torch settings a run may change.

    RecBole's ``init_seed`` flips cuDNN's ``benchmark``/``deterministic`` flags and a
    model may change the thread count; a warm worker must start every run from the same
    settings as a fresh process, or run N+1 depends on run N's config.
    """
    import torch

    saved = (torch.get_num_threads(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.get_default_dtype(), torch.is_grad_enabled())
    try:
        yield
    finally:
        threads, bench, det, algos, dtype, grad = saved
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, det
        if torch.are_deterministic_algorithms_enabled() != algos:
            torch.use_deterministic_algorithms(algos)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


@contextlib.contextmanager
def process_output(log_path: Path):
    """Send the process's stdout/stderr (prints, C-level warnings) to one file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)


def run_log_handler(log_path: Path) -> logging.Handler:
    """The handler that writes a run's log records to its ``run.log``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    return handler


@contextlib.contextmanager
def _run_logging(log_path: Path):
    """Send RecBole's root logger, warnings and the process's stdout/stderr to one file."""
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    handler = run_log_handler(log_path)
    for h in old_handlers:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with process_output(log_path):
            yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in old_handlers:
            root.addHandler(h)
        root.setLevel(old_level)


@contextlib.contextmanager
def _isolated(log_path: Path):
    """A solo run's isolation: its own log file and the process's torch settings back."""
    with _run_logging(log_path), torch_globals():
        yield


def _dataset_key(config) -> str:
    from recbole.utils.argument_list import dataset_arguments

    parts = {k: config[k] for k in dataset_arguments if k in config}
    parts.update(dataset=config["dataset"], data_path=config["data_path"], MODEL_TYPE=str(config["MODEL_TYPE"]), model=config["model"])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _dataset(config, cache: bool):
    """The parsed dataset, from the per-process cache when the data settings match.

    ``data_preparation`` shuffles the dataset in place before splitting, so every run
    works on a deep copy of the cached, pristine object.
    """
    from recbole.data import create_dataset

    if not cache:
        return create_dataset(config)
    key = _dataset_key(config)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE.clear()  # one dataset at a time keeps memory flat
        _DATASET_CACHE[key] = create_dataset(config)
    return copy.deepcopy(_DATASET_CACHE[key])


def _loaders_key(config) -> str:
    final = config.final_config_dict
    parts = {k: final[k] for k in DATA_KEYS if k in final}
    parts["_dataset"] = _dataset_key(config)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _prepared(config, cache: bool):
    """``(train, valid, test)`` dataloaders, from the per-process cache when the data
    settings match.

    ``data_preparation`` costs 2.2 s per run on ml-1m (2-core CPU): the split's per-user
    Python loop, the sampler's sets of positives, the evaluation loaders' per-user
    histories. Runs of a grid over model settings with one seed build the very same
    loaders, so the first build is kept, never iterated, and each run gets a deep copy
    in which the first run's Config is replaced by its own (``memo``): the loaders'
    generator, batch sizes and sampler state are then those of a fresh build, and the
    run's numbers are those of a cold run (tests/perf/test_warm.py).
    """
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    key = _loaders_key(config) if cache else None
    if key is not None and key in _LOADER_CACHE:
        LOADER_STATS["hits"] += 1
        cached, cached_config = _LOADER_CACHE[key]
        logging.getLogger().info("dataloaders: the worker's cached build for these data settings")
        return copy.deepcopy(cached, _shared(cached, {id(cached_config): config}))
    init_seed(config["seed"], config["reproducibility"])
    dataset = _dataset(config, cache)
    init_seed(config["seed"], config["reproducibility"])
    loaders = data_preparation(config, dataset)
    if key is None:
        return loaders
    LOADER_STATS["misses"] += 1
    _LOADER_CACHE.clear()  # one set at a time keeps memory flat
    _LOADER_CACHE[key] = (loaders, config)
    return copy.deepcopy(loaders, _shared(loaders, {id(config): config}))


# What RecBole builds once per split and only ever reads: the samplers' sets of each
# user's positives, the evaluation loaders' per-user histories, the ``list(range(n))``
# each torch DataLoader indexes. Deep-copying them (2.3M numpy scalars on ml-1m) took
# longer than building the loaders, so copies share them.
_READ_ONLY = ("uid2history_item", "uid2positive_item", "uid2items_num", "uid_list", "dataset")


def _shared(loaders, memo: dict) -> dict:
    """``memo`` for ``copy.deepcopy(loaders, memo)`` that keeps :data:`_READ_ONLY`
    structures and the samplers' ``used_ids`` shared instead of copied."""
    for loader in loaders:
        parts = [vars(loader).get(name) for name in _READ_ONLY]
        sampler = vars(loader).get("_sampler")
        parts.append(getattr(sampler, "used_ids", None))
        for part in parts:
            if part is not None:
                memo[id(part)] = part
    return memo


def _count_flops(model, dataset, config) -> None:
    """RecBole's ``get_flops`` on the new model, logged, as ``run_recbole`` does between
    building the model and the trainer.

    Not for the count: ``get_flops`` ends with ``train(True)`` on a copy of the model, and
    a model whose ``train()`` draws random numbers (SGL builds its augmented graphs there)
    moves the random stream. Calling it here keeps every run's stream, and so its numbers,
    equal to RecBole's quick start (``tests/models/test_reference_recbole.py``). A model
    it cannot count is logged and trained all the same."""
    from recbole.data.transform import construct_transform
    from recbole.utils import get_flops

    log = logging.getLogger()
    try:
        flops = get_flops(model, dataset, config["device"], log, construct_transform(config))
    except Exception as err:  # noqa: BLE001 - a count is never worth a run
        log.warning("FLOPs not counted: %s", f"{type(err).__name__}: {err}".splitlines()[0])
        return
    log.info("FLOPs: %s", flops)


@contextlib.contextmanager
def _adjacency_cache(model_cls, enabled: bool):
    """Reuse ``get_norm_adj_mat`` across runs that train on the same interactions.

    Building LightGCN's normalised adjacency (scipy dok, on the CPU) is most of a graph
    model's set-up: 1.2 s on ml-100k, 5.8 s on ml-1m, every run. It is a pure function of
    the training interaction matrix, so the key is that matrix's bytes (hashed, ~5 ms on
    ml-1m) plus the method itself; runs of a grid with one seed share their split and
    hit. Each run gets its own copy, so a model that edits its matrix cannot leak.
    """
    fn = getattr(model_cls, "get_norm_adj_mat", None)
    if not enabled or fn is None:
        yield
        return
    import torch

    def cached(self, *args, **kwargs):
        im = getattr(self, "interaction_matrix", None)
        if im is None or not hasattr(im, "row"):
            return fn(self, *args, **kwargs)
        digest = hashlib.sha256()
        for arr in (im.row, im.col, im.data):
            digest.update(arr.tobytes())
        key = (fn.__module__, fn.__qualname__, im.shape, getattr(self, "n_users", None), getattr(self, "n_items", None),
               repr(args), repr(sorted(kwargs.items())), digest.hexdigest())
        if key in _ADJ_CACHE:
            ADJ_STATS["hits"] += 1
        else:
            ADJ_STATS["misses"] += 1
            if len(_ADJ_CACHE) >= 2:  # a grid shares one split; two keeps memory flat
                _ADJ_CACHE.pop(next(iter(_ADJ_CACHE)))
            _ADJ_CACHE[key] = fn(self, *args, **kwargs)
        value = _ADJ_CACHE[key]
        return value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)

    had_own = "get_norm_adj_mat" in model_cls.__dict__
    model_cls.get_norm_adj_mat = cached
    try:
        yield
    finally:
        if had_own:
            model_cls.get_norm_adj_mat = fn
        else:
            del model_cls.get_norm_adj_mat


def _loss_names(model, n: int) -> list[str]:
    names = list(getattr(model, "loss_names", ()) or ())
    if len(names) == n:
        return names
    return ["loss"] if n == 1 else [f"loss_{i}" for i in range(n)]


def _as_floats(result) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(result or {}).items()}


def _oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def execute(task: Task, emit: Emit, cache: bool = True, verdict: Callable[[int], bool] | None = None,
            isolation: Callable[[Path], Any] | None = None) -> dict:
    """Run one task to the end and return its ``finished`` event (also emitted).

    Never raises for a problem of the run itself: a NaN loss, an exception or an
    out-of-memory error become the run's status. ``KeyboardInterrupt`` propagates.
    ``finished`` is emitted last, once the run's log is flushed and closed: from then on
    the worker holds nothing of the run, and the coordinator may stop it at once.

    ``verdict`` (a task with ``verdicts: true``, ``ablate search``) waits for the
    coordinator's answer to each ``valid`` event: True ends the run there as ``pruned``,
    its epochs already reported.

    ``isolation(log_path)`` is the context the run trains in: by default its own log file
    and the process's torch settings restored after it; a fused group (:mod:`ablate.fused`)
    gives each member a log of its own and restores the settings once for the group.
    """
    run_id = task["run_id"]
    run_dir = Path(task["run_dir"])
    log_path = run_dir / "run.log"
    t0 = time.time()
    state = {"epoch": None, "best_epoch": None, "best_score": None}
    base = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()}
    state["pulse"] = Pulse(emit, base, task.get("beat_every", BEAT_EVERY))
    gpu = task.get("gpu")
    mps = under_mps()
    device = "cpu" if gpu is None else f"cuda:{gpu}" + ("+mps" if mps else "")
    if task.get("fused"):  # trained side by side with these runs (ablate.fused)
        device += f"+fused{len(task['fused'])}"
    emit({**base, "type": "started", "device": device, "log_path": str(log_path), "mps": mps,
          "fused": task.get("fused")})

    def finished(status: str, **extra) -> dict:
        return {**base, "type": "finished", "status": status, "epoch": state["epoch"], "best_epoch": state["best_epoch"],
                "wall_seconds": time.time() - t0, **extra}

    event = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        event = finished("failed", error=f"cannot create run folder {run_dir}: {err.strerror or err}")
    if event is None:
        try:
            with (isolation or _isolated)(log_path):
                if task.get("threads"):  # the slot's share of the cores (it can change under --per-gpu auto)
                    import torch

                    torch.set_num_threads(int(task["threads"]))
                event = _train(task, emit, base, state, finished, cache, verdict)
            if state.get("cuda_lost"):
                event = {**event, "retire": True}
                if event["status"] != "done":
                    event["error"] = (event.get("error") or "failed").rstrip(". ") + LOST_CONTEXT
        except KeyboardInterrupt:
            raise
        except OSError as err:  # e.g. the log folder is unwritable or the disk is full
            if event is None:  # else the run ended and only closing its log failed: its result stands
                event = finished("failed", error=f"{type(err).__name__}: {err}")
    emit(event)
    return event


def _train(task, emit, base, state, finished, cache, verdict=None):
    import torch
    from recbole.config import Config
    from recbole.utils import get_trainer, init_seed

    from ablate import catalog, compat

    run_dir = Path(task["run_dir"])
    gpu = task.get("gpu")
    config_dict = dict(task["config"])
    config_dict.update(
        checkpoint_dir=str(run_dir / "checkpoints"), show_progress=False, state="INFO",
        gpu_id="" if gpu is None else str(gpu), use_gpu=gpu is not None,
    )
    argv, sys.argv = sys.argv, sys.argv[:1]  # Config() reads overrides from sys.argv
    model = trainer = None
    try:
        model_cls = catalog.resolve_class(task["model"])
        config = Config(model=model_cls, dataset=config_dict["dataset"], config_dict=config_dict)
        if gpu is not None and config["device"].type != "cuda":  # RecBole would quietly train on the CPU
            return finished("failed", error=f"given GPU {gpu}, but torch {torch.__version__} cannot use CUDA here "
                                            "(a CPU build of torch, or a driver too old for it)", versions=run_versions(task["model"]))
        logging.getLogger().info("ablate run %s (%s) key=%s", task["run_id"], task.get("name"), task.get("key"))
        train_data, valid_data, test_data = _prepared(config, cache)
        pulse = state["pulse"]
        pulse.enter("model")
        init_seed(config["seed"], config["reproducibility"])
        with _adjacency_cache(model_cls, cache):
            model = model_cls(config, train_data._dataset).to(config["device"])
        _count_flops(model, train_data._dataset, config)
        # RecBole picks a trainer by the model's name; a model of ours that trains with one of
        # RecBole's trainers names it (models.NCLAblation: NCL's, with its E-step and warm-up).
        trainer = get_trainer(config["MODEL_TYPE"], getattr(model_cls, "trainer_model", config["model"]))(config, model)
        capture = EvaluationCapture(trainer, config["USER_ID_FIELD"])
        _instrument(trainer, model, train_data, emit, base, state, valid_data, verdict, capture)
        if config["device"].type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        ckpt = Path(trainer.saved_model_file)
        if ckpt.is_file():
            saved = compat.load_checkpoint(ckpt, map_location=config["device"])
            model.load_state_dict(saved["state_dict"])
            model.load_other_parameter(saved.get("other_parameter"))
        pulse.enter("test", state["epoch"], _length(test_data))
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        peak = _peak_mb(config["device"])
        if not task.get("keep_checkpoints"):
            ckpt.unlink(missing_ok=True)
        return finished("done", metrics={"valid": _as_floats(best_valid), "test": _as_floats(test)},
                        versions=run_versions(task["model"]), peak_mem_mb=peak,
                        **_evaluations({"valid": state.get("best_valid"), "test": capture.last}))
    except NanLoss as err:
        state["epoch"] = err.epoch
        return finished("nan", error=str(err), versions=run_versions(task["model"]))
    except Pruned as err:
        if trainer is not None and not task.get("keep_checkpoints"):  # an earlier epoch's best
            Path(trainer.saved_model_file).unlink(missing_ok=True)
        return finished("pruned", error=str(err), versions=run_versions(task["model"]))
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the run is the run's result
        logging.getLogger().error("run failed:\n%s", traceback.format_exc())
        status = "oom" if _oom(err) else "failed"
        message = f"{type(err).__name__}: {err}".splitlines()[0][:2000]
        return finished(status, error=message, versions=run_versions(task["model"]))
    finally:
        sys.argv = argv
        del model, trainer
        if gpu is not None and torch.cuda.is_available():
            state["cuda_lost"] = not _release_gpu()


def _release_gpu() -> bool:
    """Wait for the run's last kernels and hand its cached memory back; False when the
    process's CUDA context is lost.

    A fault on the GPU (an illegal instruction or address) is sticky: every later CUDA
    call of the process fails, and under MPS a fault in one client ends every client on
    that GPU. Such a worker cannot run anything again, so it reports its run and then
    exits, and the executor starts a fresh one for the next run.
    """
    import torch

    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - any CUDA error here means the context is gone
        return False
    return True


LOST_CONTEXT = ("; the GPU's CUDA context is lost (a fault in one run under --mps ends every run sharing "
                "that GPU): run the spec again, without --mps if it recurs")


def _peak_mb(device) -> float | None:
    """GPU memory this run holds at its peak: the caching allocator's reservation, which is
    what other processes on the GPU cannot use (``--per-gpu auto`` packs by it)."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    return torch.cuda.max_memory_reserved(device) / 2**20


class Pulse:
    """Progress events at batch granularity, at most one per ``every`` seconds (none when
    ``every`` is None), plus one at the start of each phase (model, train, valid, test).

    An ``epoch`` event comes only when an epoch ends, minutes apart on a large graph, so
    it cannot tell a slow run from a hung one; these events are what the coordinator's
    stall watchdog (``ablate run --stall-timeout``) and its log lines go by. Batches are
    counted at the model's per-batch entry points (``calculate_loss`` in training,
    ``full_sort_predict``/``predict`` in evaluation), whichever loop calls them (the fast
    path's, RecBole's, a trainer's own); a count costs one clock read and never waits
    for the device.
    """

    def __init__(self, emit: Emit, base: dict, every: float | None):
        self.emit, self.base, self.every = emit, base, every
        self.phase, self.epoch, self.batch, self.batches = "setup", None, 0, None
        self.last = time.monotonic()

    def enter(self, phase: str, epoch: int | None = None, batches: int | None = None) -> None:
        self.phase, self.epoch, self.batch, self.batches = phase, epoch, 0, batches
        self.send()

    def tick(self) -> None:
        self.batch += 1
        if self.every is not None and time.monotonic() - self.last >= self.every:
            self.send()

    def send(self) -> None:
        if self.every is None:
            return
        self.last = time.monotonic()
        self.emit({**self.base, "type": "progress", "phase": self.phase, "epoch": self.epoch, "batch": self.batch,
                   "batches": self.batches})

    def count_batches(self, model) -> None:
        """Make the model's per-batch methods (instance attributes; the class is untouched) tick."""
        for name in ("calculate_loss", "full_sort_predict", "predict"):
            method = getattr(model, name, None)
            if callable(method):
                setattr(model, name, self._counted(method))

    def _counted(self, method):
        @functools.wraps(method)
        def counted(*args, **kwargs):
            out = method(*args, **kwargs)
            self.tick()
            return out

        return counted


def _length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _evaluations(by_split: dict) -> dict:
    """The finished event's ``exact`` means and ``per_user`` values (base64 of
    :func:`ablate.peruser.encode`, so they travel as JSON too) of the evaluations kept."""
    import base64

    from ablate.peruser import encode

    exact, per_user = {}, {}
    for split, ev in by_split.items():
        if ev is None:
            continue
        exact[split] = ev.exact
        if ev.per_user is not None:
            per_user[split] = base64.b64encode(encode(ev.per_user)).decode("ascii")
    return {"exact": exact, "per_user": per_user} if exact else {}


def _instrument(trainer, model, train_data, emit: Emit, base: dict, state: dict, valid_data=None,
                verdict: Callable[[int], bool] | None = None, capture=None) -> None:
    """Wrap the trainer's epoch methods to stream per-epoch loss terms and valid scores,
    and turn RecBole's generic NaN error into :class:`NanLoss` with the epoch.
    The model's per-batch methods tick ``state["pulse"]`` (:class:`Pulse`).

    Unless the config says ``fast_path: false``, the epoch itself runs through
    :mod:`ablate.fastpath` (RecBole's loop, sampler and batching without the per-batch
    host work; the same numbers) wherever the trainer is RecBole's generic one."""
    from ablate import fastpath

    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    n_batches = max(1, len(train_data))
    wanted = trainer.config["fast_path"] is not False
    fast = wanted and fastpath.replaceable(trainer)
    if wanted:  # also for trainers with their own loop (NCL's): its adjacency is built once
        fastpath.flag_sorted_sparse(model)
    if fast:
        fastpath.vectorize_sampler(getattr(train_data, "_sampler", None))
    pulse = state.get("pulse") or Pulse(emit, base, None)
    pulse.count_batches(model)
    epochs = getattr(trainer, "epochs", None)
    eval_step = getattr(trainer, "eval_step", 0) or 0

    def _check_nan(loss):  # RecBole's per-batch check, and fastpath's check of the running sums
        if not bool(torch_isfinite(loss)):
            raise NanLoss(state["epoch"] if state["epoch"] is not None else 0)

    def _train_epoch(data, epoch_idx, loss_func=None, show_progress=False):
        state["epoch"] = epoch_idx
        pulse.enter("train", epoch_idx, n_batches)
        t = time.time()
        if fast and not show_progress:
            total = fastpath.train_epoch(trainer, data, epoch_idx, _check_nan, loss_func=loss_func)
        else:
            total = train_epoch(data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        terms = list(total) if isinstance(total, tuple) else [total]
        names = _loss_names(model, len(terms))
        losses = {n: float(v) / n_batches for n, v in zip(names, terms)}
        if any(not math.isfinite(v) for v in losses.values()):
            raise NanLoss(epoch_idx)
        validates = bool(valid_data) and eval_step > 0 and (epoch_idx + 1) % eval_step == 0  # RecBole's fit rule
        emit({**base, "type": "epoch", "epoch": epoch_idx, "epochs": epochs, "validates": validates, "losses": losses,
              "train_seconds": time.time() - t, "at": time.time(), "peak_mem_mb": _peak_mb(getattr(model, "device", None)),
              "threads": torch_threads()})
        return total

    bigger = getattr(trainer, "valid_metric_bigger", True)

    def _valid_epoch(data, *args, **kwargs):
        pulse.enter("valid", state["epoch"], _length(data))
        score, result = valid_epoch(data, *args, **kwargs)
        score_f = float(score)
        best = state["best_score"]
        # RecBole's own rule (utils.early_stopping): a tie with the best counts as the best,
        # and its model is the checkpoint that is tested
        if best is None or (score_f >= best if bigger else score_f <= best):
            state["best_score"], state["best_epoch"] = score_f, state["epoch"]
            state["best_valid"] = capture.last if capture is not None else None
        emit({**base, "type": "valid", "epoch": state["epoch"], "valid_score": score_f, "valid": _as_floats(result)})
        if verdict is not None and verdict(state["epoch"]):
            raise Pruned(state["epoch"])
        return score, result

    trainer._train_epoch, trainer._valid_epoch, trainer._check_nan = _train_epoch, _valid_epoch, _check_nan


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def torch_isfinite(loss) -> bool:
    import torch

    return bool(torch.isfinite(loss).all())


def under_mps() -> bool:
    """``ablate run --mps``: this worker's GPU is shared through the daemon whose folders
    the coordinator exported (``ablate.executors.mps``)."""
    return bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY"))

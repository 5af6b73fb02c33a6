"""A worker process's main loop, above the two ways a task trains.

A local worker (``ablate.executors.local``) is a spawned process running :func:`serve`:
it receives tasks over its pipe until told to stop, trains each one, a single run with
:func:`ablate.worker.execute`, a fused group with :func:`ablate.fused.execute_group`,
and streams their events back. A Slurm job runs :func:`run_task_standalone`: one task in
its own process, its events appended to a file on shared storage.

This module sits above the worker and the group runner, so neither imports the other's
caller: the group calls ``worker.execute`` for each member, and only this loop knows
that both exist.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ablate import fused, worker


def serve(conn, threads: int | None = None, cache: bool = True, gpu: int | str | None = None) -> None:
    """Main loop of a warm worker process: receive tasks, stream events, until ``None``.
    With ``cache=False`` (``ablate run --no-warm``) the process ends after one run, so
    every run gets a process of its own.

    SIGINT is ignored here: Ctrl-C is the coordinator's to handle, and it stops workers
    itself, so a run never half-writes a result because the terminal was interrupted.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    worker.prepare_process(threads)
    if gpu is not None and worker.under_mps():
        try:
            _load_cuda_libraries(gpu)
        except Exception as exc:  # noqa: BLE001 - a warm-up; a run on a broken GPU reports it as its own error
            print(f"ablate worker: loading CUDA libraries on GPU {gpu} failed: {exc!r}".splitlines()[0], file=sys.stderr)
    conn.send({"type": "ready", "pid": os.getpid()})
    _serve_tasks(conn, cache)


def _load_cuda_libraries(gpu: int | str) -> None:
    """Under ``--mps``: open this worker's CUDA context on its GPU and load the libraries
    a run uses (cuBLAS, cuSPARSE, the sort and top-k kernels) before any run trains.

    On an H200 (driver 580.159, torch 2.11+cu130) packed LightGCN runs under MPS died with
    "illegal instruction" the moment the first of them reached its first evaluation (its
    first cuBLAS call) while the others trained; plain PyTorch clients that loaded cuBLAS
    together at start ran clean (docs/reliability.md#cuda-mps). So every worker loads what it
    needs up front (all kernels at once: the daemon exports ``CUDA_MODULE_LOADING=EAGER``)
    and the executor starts no run on a GPU until all its workers report ready. Whether
    this avoids the fault is not yet tested on a GPU; a fault that still happens is
    reported per run (see ``ablate.worker._release_gpu``).

    ``CUDA_VISIBLE_DEVICES`` is set to the slot's GPU first, as RecBole's Config sets it
    for each run: a context opened on another GPU would keep every run there.
    """
    import torch

    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    dev = torch.device("cuda", 0)
    x = torch.ones(128, 64, device=dev)
    idx = torch.tensor([[0, 1, 2], [2, 0, 1]], device=dev)
    adj = torch.sparse_coo_tensor(idx, torch.ones(3, device=dev), (128, 128)).coalesce()  # sort (cub)
    y = torch.sparse.mm(adj, x)  # cuSPARSE
    z = y @ x.T  # cuBLAS
    torch.topk(z, 10, dim=-1)
    adj.t().coalesce()
    torch.cuda.synchronize()


def _serve_tasks(conn, cache: bool) -> None:
    """Run the tasks the coordinator sends, until ``None``, its pipe closes, or this process
    can run nothing more."""
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        closing = []

        def verdict(epoch: int) -> bool:
            """The coordinator's answer to the valid event just sent (of ``epoch``): stop the run now?"""
            answer = conn.recv()
            if answer is None:  # asked to exit after this run: it goes on
                closing.append(True)
                return False
            return bool(answer.get("stop"))

        if "members" in task:  # a fused group: its runs train side by side
            events = fused.execute_group(task["members"], conn.send, cache=cache)
            event = {"retire": any(e.get("retire") for e in events)}
        else:
            event = worker.execute(task, conn.send, cache=cache, verdict=verdict if task.get("verdicts") else None)
        if not cache or event.get("retire") or closing:
            return  # --no-warm, or a lost CUDA context: the executor starts a fresh process


def _exit_with_parent(every: float = 1.0) -> None:
    """End this worker as soon as its coordinator is gone (even by ``kill -9``).

    Workers are daemonic, but that only helps when the coordinator exits normally; an
    orphan would otherwise train on for hours and hold a GPU. Linux's PDEATHSIG kills us
    at once; a thread watching the parent pid covers other systems. An orphan never
    writes the store (only a coordinator does), so stopping it loses nothing.
    """
    import multiprocessing
    import threading

    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None else os.getppid()
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(every)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ablate-parent-watch", daemon=True).start()


def run_standalone(work: dict, paths: dict[int, str], verdict=None) -> list[dict]:
    """Train one task, or a fused group (``{"members": [...]}``), in this process (a Slurm
    job, the benchmarks); returns the ``finished`` events.

    Each run's events are appended as JSON lines to its file in ``paths`` (run id ->
    path), so a coordinator on another machine can read them, live or later. ``verdict``
    (a search trial): called after each valid event, True stops the run (``pruned``).
    """
    members = work["members"] if "members" in work else [work]
    worker.prepare_process(members[0].get("threads"))
    # no progress events in a job's file: Slurm has its own time limit
    members = [{"beat_every": None, **t} for t in members]
    files = {rid: open(path, "a", encoding="utf-8") for rid, path in paths.items()}  # noqa: SIM115

    def emit(event: dict) -> None:
        out = files.get(event.get("run_id"))
        if out is not None:
            out.write(json.dumps(event, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())

    try:
        if len(members) > 1:  # the group shares the parsed dataset and dataloaders: cache on
            return fused.execute_group(members, emit, cache=True)
        return [worker.execute(members[0], emit, cache=False, verdict=verdict)]
    finally:
        for out in files.values():
            out.close()


def run_task_standalone(task: dict, events_path: str | None = None) -> dict:
    """One task in this process, its events appended to ``events_path`` when given
    (:func:`run_standalone` for a single run); returns its ``finished`` event."""
    return run_standalone(task, {task["run_id"]: events_path} if events_path else {})[0]

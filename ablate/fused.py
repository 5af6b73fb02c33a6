"""A fused group: several runs of one graph backbone train side by side in one process.

Why. A LightGCN batch on a GPU is bound by kernel launches, not arithmetic, and on a CPU
one sparse product over a wide matrix costs far less than the same products one by one
(ml-1m, 3 layers forward and backward: 8 runs side by side 3.0x the throughput of 8 runs
in turn). Propagation is linear and acts on each column alone, so the members'
embeddings side by side, ``[n, d1 + d2 + ...]``, go through one product per layer and
each member takes back its own columns.

Everything else stays each member's own, and is RecBole's and ablate's unchanged code:
each member runs :func:`ablate.worker.execute` (config, cached dataloaders, model,
trainer, fit, early stopping, checkpoint, evaluation, events) in a thread of its own.
Only one thread runs at a time: the group hands a *baton* from member to member, and a
member gives it back only where the group must act for several members at once: a
product with a sparse adjacency while its batch trains (``models.lightgcn_base.
propagation_hook`` for ablate's models, ``torch.sparse.mm`` for RecBole's LightGCN).
The group answers all waiting products with one wide product per adjacency.

Each member sees its own global random streams (torch, CUDA, numpy, Python's
``random``): the group saves them when a member gives the baton back and restores them
when it gets it again, so each draws exactly what its solo run draws. A member that
ends (early stop, NaN, failure) leaves; the others go on.

On the CPU each member's numbers equal its solo run's bit for bit
(``tests/perf/test_fused.py``). A column of a wide COO product is computed as the narrow
product computes it, and each member runs its own backward through autograd nodes made
in its own thread where its solo run makes its products (:class:`_GroupProduct`), whose
forward and backward products the group computes wide: autograd then visits each
member's graph, and sums its gradients, in the solo order. On a GPU autograd runs nodes
on a device thread of its own, where one member's node cannot wait for the others', so
there the products are nodes of one graph and the group runs one backward from every
member's loss (:func:`backward`): equal to float32 rounding.

Which runs may train together is :func:`ablate.sharing.fuse_key`'s decision; the
scheduler groups pending runs by it (``ablate run --fuse``). The hooks a member calls
are :mod:`ablate.member_hooks`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Callable

from ablate import worker
from ablate import member_hooks as hooks
from ablate.member_hooks import STATS, Member

def _rng_state() -> tuple:
    import random

    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple) -> None:
    import random

    import numpy as np
    import torch

    cpu, cuda, np_state, py_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)


class _Adjacencies:
    """Which adjacency objects are equal (indices, values, shape): one token per content,
    so members that built equal graphs share products. Objects are kept referenced, so an
    id is never reused while the group lives."""

    def __init__(self):
        self._token: dict[int, int] = {}
        self._kept: list = []

    def token(self, adj) -> int:
        known = self._token.get(id(adj))
        if known is not None:
            return known
        import torch

        idx, val = adj._indices(), adj._values()
        for other in self._kept:
            o_idx, o_val = other._indices(), other._values()
            if (other.shape == adj.shape and other.dtype == adj.dtype and other.device == adj.device
                    and o_idx.shape == idx.shape and torch.equal(o_idx, idx) and torch.equal(o_val, val)):
                self._token[id(adj)] = self._token[id(other)]
                self._kept.append(adj)
                return self._token[id(adj)]
        self._token[id(adj)] = len(self._kept)
        self._kept.append(adj)
        return self._token[id(adj)]


class _RunLogs:
    """Root-logger records of each member to its own run log (by thread); the process's
    stdout/stderr (C-level warnings) to the first member's."""

    def __init__(self):
        import logging

        self.files: dict[int, logging.Handler] = {}

        class Dispatch(logging.Handler):
            def emit(inner, record):  # noqa: N805 - the handler's own self
                handler = self.files.get(threading.get_ident())
                if handler is not None:
                    handler.handle(record)

        self.dispatch = Dispatch()

    @contextlib.contextmanager
    def member(self, log_path: Path):
        handler = worker.run_log_handler(log_path)
        self.files[threading.get_ident()] = handler
        try:
            yield
        finally:
            self.files.pop(threading.get_ident(), None)
            handler.close()


def execute_group(tasks: list[dict], emit: Callable[[dict], None], cache: bool = True) -> list[dict]:
    """Train ``tasks`` as one fused group; returns their ``finished`` events (also emitted,
    each as its member ends). One task is simply :func:`ablate.worker.execute`."""
    if len(tasks) == 1:
        return [worker.execute(tasks[0], emit, cache=cache)]
    import logging

    import torch

    import models.lightgcn_base as backbone

    ids = [t["run_id"] for t in tasks]
    members = [Member(dict(t, fused=ids)) for t in tasks]
    logs = _RunLogs()
    adjacencies = _Adjacencies()
    root = logging.getLogger()
    first_log = Path(tasks[0]["run_dir"]) / "run.log"  # process_output makes its folder
    start_rng = _rng_state()
    sparse_mm = torch.sparse.mm

    def fused_sparse_mm(mat1, mat2, *args, **kwargs):
        if args or kwargs:
            return sparse_mm(mat1, mat2, *args, **kwargs)
        return hooks.product_hook(mat1, mat2, sparse_mm)

    def main(m: Member) -> None:
        hooks.enter(m)
        m.go.wait()
        try:
            m.event = worker.execute(m.task, emit, cache=cache, isolation=logs.member)
        except BaseException as err:  # noqa: BLE001 - execute reports its run's own errors; this is the group's
            m.event = {"type": "finished", "run_id": m.task["run_id"], "status": "failed",
                       "error": f"fused group: {type(err).__name__}: {err}".splitlines()[0]}
            emit(m.event)
        finally:
            m.request = None
            m.parked.set()

    def turn(m: Member) -> None:
        """Give ``m`` the baton with its random streams; take both back when it parks."""
        _set_rng_state(m.rng)
        m.parked.clear()
        m.go.set()
        m.parked.wait()
        m.rng = _rng_state()

    saved_handlers, saved_level, argv = root.handlers[:], root.level, sys.argv  # each member swaps argv
    with worker.process_output(first_log), worker.torch_globals():
        for h in saved_handlers:
            root.removeHandler(h)
        root.addHandler(logs.dispatch)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        hooks.SPARSE_MM[:] = [sparse_mm]
        backbone.propagation_hook, torch.sparse.mm = hooks.product_hook, fused_sparse_mm
        try:
            for m in members:
                m.rng = start_rng
                m.thread = threading.Thread(target=main, args=(m,), name=f"ablate-run-{m.task['run_id']}", daemon=True)
                m.thread.start()
            ready = list(members)
            while True:
                for m in ready:
                    turn(m)
                live = [m for m in members if m.request is not None]
                if not live:
                    break
                products = [m for m in live if m.request[0] == "product"]
                ready = products or live
                try:
                    if products:
                        _products(products, adjacencies)
                    else:  # every member still training waits at its step's backward (GPU)
                        torch.autograd.backward([m.request[1] for m in live])
                        STATS["backward"] += 1
                except Exception as err:  # noqa: BLE001 - each member reports it as its run's error
                    for m in ready:
                        m.error = err
        finally:
            backbone.propagation_hook, torch.sparse.mm = None, sparse_mm
            hooks.SPARSE_MM.clear()
            root.removeHandler(logs.dispatch)
            for h in saved_handlers:
                root.addHandler(h)
            root.setLevel(saved_level)
            _set_rng_state(start_rng)
            sys.argv = argv
    for m in members:
        m.thread.join()
    return [m.event for m in members]


def _products(waiting: list[Member], adjacencies: _Adjacencies) -> None:
    """Answer every waiting product: one wide product per (adjacency, product, dtype,
    device, graph or not); each member gets its own columns back, contiguous, as its
    narrow product would have returned them. Products that are nodes of the group's
    graph (GPU) are computed with gradients on, the others without."""
    import torch

    buckets: dict[tuple, list[Member]] = {}
    for m in waiting:
        _, adj, x, fn, graph = m.request
        buckets.setdefault((adjacencies.token(adj), fn, x.dtype, x.device, graph), []).append(m)
    for (_, fn, _, _, graph), group in buckets.items():
        with torch.set_grad_enabled(graph):
            if len(group) == 1:
                m = group[0]
                m.result = fn(m.request[1], m.request[2])
                STATS["narrow"] += 1
                continue
            adj = group[0].request[1]
            xs = [m.request[2] for m in group]
            wide = fn(adj, torch.cat(xs, dim=1))
            STATS["wide"] += 1
            for m, part in zip(group, torch.split(wide, [x.shape[1] for x in xs], dim=1)):
                m.result = part.contiguous()

"""Fused sweeps: several runs of one graph backbone train side by side in one process.

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

Which runs may train together is :func:`fuse_key`'s decision; the scheduler groups
pending runs by it (``ablate run --fuse``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import Any, Callable

# Models whose training propagates over the normalised user-item adjacency with ablate's
# or RecBole's LightGCN propagation; anything else always trains alone.
FUSIBLE_MODELS = frozenset({"LightGCN", "SimGCL", "XSimGCL", "LightGCNOT"})
# ``--fuse auto``: members per group. On the 2-core CPU, 3-layer products over ml-1m: 4
# side by side 2.5x, 8 side by side 3.0x the throughput of the same runs in turn.
AUTO_SIZE = 8


# ---------------------------------------------------------------------------- planning


def fuse_key(model: str, config: dict, data_keys: frozenset[str]) -> str | None:
    """Runs with equal keys may train as one group; None: this run trains alone.

    Members must build the same training graph and batches of the same shape: every data
    setting (:data:`ablate.worker.DATA_KEYS`) but the model's name is shared, and the
    seed too unless the split ignores it (``eval_args.order: TO``, a time-ordered split:
    members then share the graph but each shuffles and samples with its own seed).
    ``fast_path: false`` runs RecBole's own epoch loop, whose ``backward`` the group
    cannot join, so such runs train alone.
    """
    if model not in FUSIBLE_MODELS or config.get("fast_path") is False:
        return None
    eval_args = config.get("eval_args") or {}
    order = str(eval_args.get("order", "RO")).upper() if isinstance(eval_args, dict) else "RO"
    skip = {"model", "MODEL_TYPE"} | ({"seed"} if order == "TO" else set())
    parts = {k: config[k] for k in sorted(data_keys - skip) if k in config}
    parts["reproducibility"] = config.get("reproducibility", True)
    return json.dumps(parts, sort_keys=True, default=str)


def parse_fuse(value: str | None) -> int:
    """``--fuse`` as a group size: ``off`` -> 1, ``auto`` -> :data:`AUTO_SIZE`, ``N`` -> N."""
    from ablate.errors import UsageError

    text = (value or "off").strip().lower()
    if text == "off":
        return 1
    if text == "auto":
        return AUTO_SIZE
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"--fuse {value}: expected auto, off or a group size (an integer >= 1)") from None
    if n < 1:
        raise UsageError(f"--fuse {value}: a group size must be at least 1")
    return n


def groups(runs: list[tuple[int, str, dict]], size: int, data_keys: frozenset[str]) -> list[list[int]]:
    """Run ids in groups of at most ``size`` with equal :func:`fuse_key` (in the order
    given); runs that cannot fuse are groups of one."""
    out: list[list[int]] = []
    open_groups: dict[str, list[int]] = {}
    for rid, model, config in runs:
        key = fuse_key(model, config, data_keys) if size > 1 else None
        if key is None:
            out.append([rid])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            out.append(group)
        group.append(rid)
    return out


# ---------------------------------------------------------------------------- training

_local = threading.local()  # .member: the _Member whose thread this is
# Products this process answered for groups: ``wide`` products of several members'
# columns, ``narrow`` ones of a member alone; the tests check fusion really happened.
STATS = {"wide": 0, "narrow": 0, "backward": 0}
_SPARSE_MM: list = []  # torch.sparse.mm as it was before a group replaced it
# Devices whose members share one autograd graph and one backward (see _product_hook):
# GPUs, where autograd runs nodes on a device thread. A test adds "cpu" to run that path
# where it can run here.
SHARED_GRAPH_DEVICES = {"cuda"}


class _Member:
    """One run of a group: its thread, its random streams, and what it waits for."""

    def __init__(self, task: dict):
        self.task = task
        self.go = threading.Event()  # the baton is this member's
        self.parked = threading.Event()  # the member gave the baton back
        # ("product", adj, x, fn, graph) | ("backward", loss) | None: ended
        self.request: tuple | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.training = False  # inside a fused train epoch: products and backward are shared
        self.shared_graph = False  # this step's products are nodes of the group's one graph (GPU)
        self.rng: tuple | None = None
        self.event: dict | None = None
        self.thread: threading.Thread | None = None

    def wait_for_group(self, request: tuple):
        """Give the baton back with ``request`` and wait until the group has acted on it."""
        self.request = request
        self.go.clear()
        self.parked.set()
        self.go.wait()
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        result, self.result = self.result, None
        return result


def _member() -> _Member | None:
    m = getattr(_local, "member", None)
    return m if m is not None and m.training else None


@contextlib.contextmanager
def training():
    """Inside a fused group member's train epoch: its products with a sparse adjacency and
    its backward go through the group. Outside a group (or outside a train epoch:
    evaluation, FLOPs counting) nothing changes."""
    m = getattr(_local, "member", None)
    if m is None:
        yield
        return
    m.training = True
    try:
        yield
    finally:
        m.training = False


def backward(loss) -> None:
    """``loss.backward()``; on a GPU, in a group member's train epoch, the group's one
    backward from every member's loss."""
    m = _member()
    if m is None or not m.shared_graph:
        loss.backward()
        return
    m.shared_graph = False
    m.wait_for_group(("backward", loss))


def _transposed_mm(adj, grad):
    """What autograd computes for ``torch.sparse.mm(adj, x)``'s gradient in ``x``, bit for
    bit (``adj.t().mm(grad)``, checked against autograd in tests/perf/test_fused.py)."""
    return adj.t().mm(grad)


def _pair(fn) -> tuple[Callable, Callable] | None:
    """The product ``fn`` computes, forward and backward, as no-grad functions of
    ``(adj, x)``; None for a product the group does not know."""
    import models.lightgcn_base as backbone

    mm = _SPARSE_MM[0] if _SPARSE_MM else None
    if fn is backbone._symmetric_product:  # _SymmetricSpMM: adj @ x, and adj @ grad back
        return mm, mm
    if fn is mm:  # RecBole's LightGCN: torch.sparse.mm, and autograd's transposed product back
        return mm, _transposed_mm
    return None


def _product_hook(adj, x, fn):
    """``fn(adj, x)``, through the group when a member's train epoch multiplies by a sparse
    adjacency with gradients on.

    CPU: the member's own autograd node (:class:`_GroupProduct`, made in its thread where
    its solo run makes the product's node) asks the group for the product forward and
    for the transposed product when its backward comes; each member runs its own
    backward, so autograd visits its graph in the solo order and sums gradients in the
    solo order: bit for bit. GPU: the products are nodes of one graph, and the group
    runs one backward (:func:`backward`): autograd runs GPU nodes on a device thread of
    its own, where a member's node cannot wait for the others'.
    """
    import torch

    m = _member()
    pair = _pair(fn)
    if (m is None or pair is None or not torch.is_grad_enabled() or not isinstance(adj, torch.Tensor)
            or not adj.is_sparse or not isinstance(x, torch.Tensor) or x.dim() != 2):
        return fn(adj, x)
    if x.device.type not in SHARED_GRAPH_DEVICES:
        if not x.requires_grad:
            return m.wait_for_group(("product", adj, x, pair[0], False))
        return _GroupProduct.apply(x, m, adj, *pair)
    m.shared_graph = True
    return m.wait_for_group(("product", adj, x, fn, True))


def _group_product_class():
    import torch

    class GroupProduct(torch.autograd.Function):
        """``adj @ x`` whose forward and backward products the group computes."""

        @staticmethod
        def forward(ctx, x, m, adj, forward, backward):
            ctx.m, ctx.adj, ctx.backward_fn = m, adj, backward
            return m.wait_for_group(("product", adj, x, forward, False))

        @staticmethod
        def backward(ctx, grad):
            return ctx.m.wait_for_group(("product", ctx.adj, grad, ctx.backward_fn, False)), None, None, None, None

    return GroupProduct


class _LazyFunction:
    """The autograd Function, made on first use (this module imports without torch)."""

    def __init__(self, make):
        self._make, self._cls = make, None

    def apply(self, *args):
        if self._cls is None:
            self._cls = self._make()
        return self._cls.apply(*args)


_GroupProduct = _LazyFunction(_group_product_class)


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
        from ablate.worker import run_log_handler

        handler = run_log_handler(log_path)
        self.files[threading.get_ident()] = handler
        try:
            yield
        finally:
            self.files.pop(threading.get_ident(), None)
            handler.close()


def execute_group(tasks: list[dict], emit: Callable[[dict], None], cache: bool = True) -> list[dict]:
    """Train ``tasks`` as one fused group; returns their ``finished`` events (also emitted,
    each as its member ends). One task is simply :func:`ablate.worker.execute`."""
    from ablate import worker

    if len(tasks) == 1:
        return [worker.execute(tasks[0], emit, cache=cache)]
    import logging

    import torch

    import models.lightgcn_base as backbone

    ids = [t["run_id"] for t in tasks]
    members = [_Member(dict(t, fused=ids)) for t in tasks]
    logs = _RunLogs()
    adjacencies = _Adjacencies()
    root = logging.getLogger()
    first_log = Path(tasks[0]["run_dir"]) / "run.log"  # process_output makes its folder
    start_rng = _rng_state()
    sparse_mm = torch.sparse.mm

    def fused_sparse_mm(mat1, mat2, *args, **kwargs):
        if args or kwargs:
            return sparse_mm(mat1, mat2, *args, **kwargs)
        return _product_hook(mat1, mat2, sparse_mm)

    def main(m: _Member) -> None:
        _local.member = m
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

    def turn(m: _Member) -> None:
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
        _SPARSE_MM[:] = [sparse_mm]
        backbone.propagation_hook, torch.sparse.mm = _product_hook, fused_sparse_mm
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
            _SPARSE_MM.clear()
            root.removeHandler(logs.dispatch)
            for h in saved_handlers:
                root.addHandler(h)
            root.setLevel(saved_level)
            _set_rng_state(start_rng)
            sys.argv = argv
    for m in members:
        m.thread.join()
    return [m.event for m in members]


def _products(waiting: list[_Member], adjacencies: _Adjacencies) -> None:
    """Answer every waiting product: one wide product per (adjacency, product, dtype,
    device, graph or not); each member gets its own columns back, contiguous, as its
    narrow product would have returned them. Products that are nodes of the group's
    graph (GPU) are computed with gradients on, the others without."""
    import torch

    buckets: dict[tuple, list[_Member]] = {}
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

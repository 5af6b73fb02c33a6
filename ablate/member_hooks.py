"""The hooks through which a member of a fused group shares its work with the group.

A leaf: the epoch loop (:mod:`ablate.fastpath`) and the graph backbone
(``models.lightgcn_base.propagation_hook``) call into it, and it calls nothing of
ablate's. Outside a fused group every hook is the plain operation: :func:`training` does
nothing, :func:`backward` is ``loss.backward()``, a product is the product.

Inside a group (:mod:`ablate.fused`), each member runs in a thread of its own and
holds a :class:`Member` here; a member gives the baton back only where the group must act
for several members at once (a product with a sparse adjacency while its batch trains,
and on a GPU the backward), with a request the group answers.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

_local = threading.local()  # .member: the Member whose thread this is
# Products this process answered for groups: ``wide`` products of several members'
# columns, ``narrow`` ones of a member alone; the tests check fusion really happened.
STATS = {"wide": 0, "narrow": 0, "backward": 0}
SPARSE_MM: list = []  # torch.sparse.mm as it was before a group replaced it
# Devices whose members share one autograd graph and one backward (see product_hook):
# GPUs, where autograd runs nodes on a device thread. A test adds "cpu" to run that path
# where it can run here.
SHARED_GRAPH_DEVICES = {"cuda"}


class Member:
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


def enter(m: Member) -> None:
    """This thread trains ``m`` (a group's member threads call it first)."""
    _local.member = m


def _member() -> Member | None:
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

    mm = SPARSE_MM[0] if SPARSE_MM else None
    if fn is backbone._symmetric_product:  # _SymmetricSpMM: adj @ x, and adj @ grad back
        return mm, mm
    if fn is mm:  # RecBole's LightGCN: torch.sparse.mm, and autograd's transposed product back
        return mm, _transposed_mm
    return None


def product_hook(adj, x, fn):
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



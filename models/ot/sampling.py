r"""On-device subgraph sampling from CSR index tensors.

No Python loop touches a node: every step is a batched gather, ``torch.rand`` draw,
sort or scatter over ``[B, R]`` tensors, so one call costs the same few kernels
whether the graph has ten thousand nodes or ten million. Nothing ``N x N`` is built:
2-hop (``A^2``) neighbours are drawn by two 1-hop draws unless a small materialised
``A^2`` (diagonal removed) is handed in, and subgraph adjacencies are looked up in a
sorted edge-key array with ``torch.searchsorted``.

A subgraph is ``k = 1 + k1 + k2`` node ids, centre last (GSC's layout):
``k1`` distinct 1-hop neighbours, then ``k2`` distinct nodes from the second source
(2-hop through ``A``, rows of ``A^2``, or the centre's k-means cluster). When a centre
has fewer than ``k1`` neighbours, the missing slots are filled from the second source
(GSC's "fill from the next hop"); centres that still lack ``k - 1`` distinct nodes are
dropped, as GSC drops centres whose component is too small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CSR", "csr_from_coo", "two_hop_csr", "two_hop_paths", "sample_subgraphs", "subgraph_adjacency",
    "group_derangement",
]


@dataclass
class CSR:
    """A sparse 0/1 matrix as ``indptr [N+1]``, ``indices [nnz]`` (sorted within rows)."""

    indptr: Tensor
    indices: Tensor
    n_cols: int

    @property
    def n_rows(self) -> int:
        return self.indptr.numel() - 1

    def to(self, device) -> "CSR":
        return CSR(self.indptr.to(device), self.indices.to(device), self.n_cols)

    def degree(self, rows: Tensor) -> Tensor:
        return self.indptr[rows + 1] - self.indptr[rows]

    def edge_keys(self) -> Tensor:
        """Sorted ``row * n_cols + col`` for every stored entry (for membership tests)."""
        rows = torch.repeat_interleave(
            torch.arange(self.n_rows, device=self.indptr.device), self.indptr[1:] - self.indptr[:-1]
        )
        return rows * self.n_cols + self.indices


def csr_from_coo(row: np.ndarray, col: np.ndarray, n: int, device="cpu") -> CSR:
    """Binary, deduplicated CSR (sorted columns) of an ``n x n`` pattern from COO indices."""
    import scipy.sparse as sp

    m = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)), shape=(n, n))
    m.sum_duplicates()
    m.sort_indices()
    return CSR(
        torch.from_numpy(m.indptr.astype(np.int64)).to(device),
        torch.from_numpy(m.indices.astype(np.int64)).to(device),
        n,
    )


def two_hop_paths(csr: CSR) -> int:
    """Number of length-2 paths, an upper bound on ``nnz(A^2)``: ``sum_v deg(v)^2``."""
    deg = (csr.indptr[1:] - csr.indptr[:-1]).double()
    return int(deg.pow(2).sum().item())


def two_hop_csr(csr: CSR) -> CSR:
    """Binary ``A^2`` with the diagonal removed (scipy, on the host). Only for small graphs:
    check :func:`two_hop_paths` first."""
    import scipy.sparse as sp

    n = csr.n_rows
    indptr = csr.indptr.cpu().numpy()
    indices = csr.indices.cpu().numpy()
    a = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n, n))
    a2 = (a @ a).tocsr()
    a2.setdiag(0)
    a2.eliminate_zeros()
    a2.sort_indices()
    return CSR(
        torch.from_numpy(a2.indptr.astype(np.int64)).to(csr.indptr.device),
        torch.from_numpy(a2.indices.astype(np.int64)).to(csr.indptr.device),
        n,
    )


def _rand(shape, device, generator):
    return torch.rand(shape, device=device, generator=generator)


def _distinct_draws(csr: CSR, rows: Tensor, r: int, generator=None) -> Tensor:
    """Up to ``r`` distinct entries of each row, in uniformly random order, ``-1`` padded.

    Rows with degree <= r: a random permutation of all their entries (exact). Longer rows:
    ``r`` i.i.d. draws, repeats removed (sequential sampling with rejection, i.e. exactly
    uniform without replacement for the entries it returns).
    """
    deg = csr.degree(rows)  # [B]
    b = rows.numel()
    dev = rows.device
    perm = _rand((b, r), dev, generator).argsort(dim=1)  # a permutation of 0..r-1 per row
    iid = (_rand((b, r), dev, generator) * deg.unsqueeze(1)).long()
    small = (deg <= r).unsqueeze(1)
    offs = torch.where(small, perm, iid)
    valid = offs < deg.unsqueeze(1)
    pos = csr.indptr[rows].unsqueeze(1) + offs.clamp_max((deg - 1).clamp_min(0).unsqueeze(1))
    vals = csr.indices[pos.clamp_max(max(csr.indices.numel() - 1, 0))] if csr.indices.numel() else pos
    vals = torch.where(valid, vals, torch.full_like(vals, -1))
    return _first_unique(vals)


def _first_unique(vals: Tensor) -> Tensor:
    """Keep the first occurrence of each id per row (order preserved), ``-1`` elsewhere,
    and move the kept ids to the left."""
    b, r = vals.shape
    if r == 0:
        return vals
    sorted_vals, order = torch.sort(vals, dim=1, stable=True)
    dup_sorted = torch.zeros_like(sorted_vals, dtype=torch.bool)
    dup_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    dup = torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)
    vals = torch.where(dup, torch.full_like(vals, -1), vals)
    return _compact(vals)


def _compact(vals: Tensor) -> Tensor:
    """Stable-move every non-negative entry of each row to the left."""
    key = (vals < 0).to(torch.int8)
    order = torch.sort(key, dim=1, stable=True).indices
    return torch.gather(vals, 1, order)


def _exclude(vals: Tensor, banned: Tensor) -> Tensor:
    """Set entries of ``vals [B, R]`` that occur in the same row of ``banned [B, E]`` to -1."""
    hit = (vals.unsqueeze(2) == banned.unsqueeze(1)).any(dim=2)
    return torch.where(hit, torch.full_like(vals, -1), vals)


def _two_hop_walks(csr: CSR, rows: Tensor, r: int, generator=None) -> Tensor:
    """``r`` two-step random walks per row (centre -> neighbour -> neighbour), -1 on dead ends."""
    b = rows.numel()
    mid = _step(csr, rows.unsqueeze(1).expand(b, r), generator)
    return _step(csr, mid, generator)


def _step(csr: CSR, nodes: Tensor, generator=None) -> Tensor:
    ok = nodes >= 0
    safe = nodes.clamp_min(0)
    deg = csr.degree(safe)
    ok = ok & (deg > 0)
    off = (_rand(nodes.shape, nodes.device, generator) * deg).long().clamp_max((deg - 1).clamp_min(0))
    pos = (csr.indptr[safe] + off).clamp_max(max(csr.indices.numel() - 1, 0))
    nxt = csr.indices[pos]
    return torch.where(ok, nxt, torch.full_like(nxt, -1))


def sample_subgraphs(
    adj: CSR,
    centres: Tensor,
    k1: int,
    k2: int,
    source: str = "A",
    a2: CSR | None = None,
    clusters: CSR | None = None,
    node_cluster: Tensor | None = None,
    oversample: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample one subgraph per centre.

    Args:
        adj: the graph ``A`` (no self loops) as :class:`CSR`.
        centres: ``[B]`` node ids.
        k1: 1-hop nodes per subgraph (default in the model: 3).
        k2: nodes per subgraph from ``source`` (default in the model: 2).
        source: ``"A"`` (2-hop through two 1-hop draws), ``"A2"`` (uniform over the
            distinct 2-hop nodes: rows of ``a2`` when given, else two-hop walks), or
            ``"cluster"`` (uniform over the centre's cluster).
        a2: optional materialised ``A^2`` (diagonal removed).
        clusters: cluster -> member nodes, as :class:`CSR` (for ``"cluster"``).
        node_cluster: ``[N]`` cluster id of each node (for ``"cluster"``).
        oversample: draws per needed node for the second source (default 4).

    Returns:
        ``(nodes [B, k], valid [B])``: node ids with the centre last, and whether the
        centre had ``k - 1`` distinct nodes. Invalid rows (GSC drops them) are filled
        with the centre so that every shape stays static; callers mask them out.
    """
    dev = centres.device
    b = centres.numel()
    k = 1 + k1 + k2
    cen = centres.view(b, 1)
    if k1 > 0:
        hop1 = _distinct_draws(adj, centres, max(2 * k1 + 8, 16), generator)
        hop1 = _exclude(hop1, cen)[:, :k1]
        hop1 = _compact(hop1)
    else:
        hop1 = torch.full((b, 0), -1, dtype=torch.long, device=dev)
    n1 = (hop1 >= 0).sum(dim=1)
    need2 = k2 + (k1 - n1)  # fill from the next hop
    r2 = oversample * (k1 + k2) + 8
    if k1 + k2 == 0:
        cand = torch.full((b, 0), -1, dtype=torch.long, device=dev)
    elif source == "A" or (source == "A2" and a2 is None):
        cand = _first_unique(_two_hop_walks(adj, centres, r2, generator))
    elif source == "A2":
        cand = _distinct_draws(a2, centres, r2, generator)
    elif source == "cluster":
        if clusters is None or node_cluster is None:
            raise ValueError("cluster sampling needs clusters and node_cluster")
        cand = _distinct_draws(clusters, node_cluster[centres], r2, generator)
    else:
        raise ValueError(f"unknown sampling source {source!r} (expected A, A2 or cluster)")
    cand = _compact(_exclude(cand, torch.cat([cen, hop1], dim=1)))
    cols = torch.arange(cand.shape[1], device=dev).unsqueeze(0)
    cand = torch.where(cols < need2.unsqueeze(1), cand, torch.full_like(cand, -1))
    body = _compact(torch.cat([hop1, cand], dim=1))
    if body.shape[1] < k - 1:
        pad = torch.full((b, k - 1 - body.shape[1]), -1, dtype=torch.long, device=dev)
        body = torch.cat([body, pad], dim=1)
    body = body[:, : k - 1]
    valid = (body >= 0).all(dim=1)
    # Static shapes: a dropped centre keeps its row, filled with itself, and is masked out.
    body = torch.where(body >= 0, body, cen.expand_as(body))
    return torch.cat([body, cen], dim=1), valid


def subgraph_adjacency(nodes: Tensor, edge_keys: Tensor, n: int) -> Tensor:
    """Dense ``[B, k, k]`` 0/1 adjacency of each sampled subgraph, by binary search in the
    sorted edge keys (``row * n + col``) of the big graph. Cost ``O(B k^2 log nnz)``."""
    b, k = nodes.shape
    keys = (nodes.unsqueeze(2) * n + nodes.unsqueeze(1)).reshape(-1)
    if edge_keys.numel() == 0:
        return torch.zeros(b, k, k, device=nodes.device)
    pos = torch.searchsorted(edge_keys, keys).clamp_max(edge_keys.numel() - 1)
    found = edge_keys[pos] == keys
    return found.view(b, k, k).float()


def shared_neighbour_adjacency(nodes: Tensor, adj: CSR, counts: bool = False) -> Tensor:
    r"""Dense ``[B, k, k]`` 0/1 pattern of ``A^2`` (diagonal removed) inside each subgraph,
    without materialising ``A^2``: pairs that share a neighbour, found by a sort-join of the
    subgraph nodes' neighbour lists. Cost ``O(k * sum of their degrees)``.

    ``counts=True``: :math:`(A^2)_{ij} = |N(i) \cap N(j)|`, the number of 2-paths from
    ``i`` to ``j``, instead of whether there is one (the notebook's "noguiyi", ``A^2``
    not normalised to a 0/1 set)."""
    b, k = nodes.shape
    dev = nodes.device
    flat = nodes.reshape(-1)
    deg = adj.degree(flat)
    total = int(deg.sum().item())
    out = torch.zeros(b * k * k, device=dev)
    if total == 0:
        return out.view(b, k, k)
    owner = torch.repeat_interleave(torch.arange(flat.numel(), device=dev), deg)  # slot b*k+i
    starts = torch.cumsum(deg, 0) - deg
    within = torch.arange(total, device=dev) - starts[owner]
    nbr = adj.indices[adj.indptr[flat][owner] + within]
    key = torch.div(owner, k, rounding_mode="floor") * adj.n_cols + nbr  # (subgraph, neighbour)
    key, order = torch.sort(key)
    owner = owner[order]
    lo = torch.searchsorted(key, key, right=False)
    hi = torch.searchsorted(key, key, right=True)
    run = hi - lo
    rep = torch.repeat_interleave(torch.arange(total, device=dev), run)
    rstart = torch.cumsum(run, 0) - run
    partner = lo[rep] + (torch.arange(rep.numel(), device=dev) - rstart[rep])
    i = owner[rep]
    j = owner[partner]
    sub = torch.div(i, k, rounding_mode="floor")
    idx = sub * k * k + (i % k) * k + (j % k)
    if counts:  # one entry per shared neighbour: their number is the count of 2-paths
        out.index_add_(0, idx, torch.ones_like(idx, dtype=out.dtype))
    else:
        out[idx] = 1.0
    out = out.view(b, k, k)
    eye = torch.eye(k, device=dev, dtype=torch.bool).unsqueeze(0)
    return out.masked_fill(eye, 0.0)


def group_derangement(group: Tensor, n_groups: int, generator=None) -> Tensor:
    """A uniformly random cyclic permutation inside each group, without a host sync.

    ``sigma[b]`` is another member of ``b``'s group (``b`` itself when it is alone): members
    are shuffled by sorting ``group + u``, ``u ~ U[0, 1)``, and each points to the next one of
    its group in that order, the last to the first. It is how a subgraph picks the subgraph
    whose views are its negatives. Group sizes come from a scatter-add, not ``bincount``,
    whose output size needs a device-to-host read on CUDA.

    Args:
        group: ``[B]`` group id of each member, in ``0 .. n_groups - 1``.
        n_groups: the number of groups.
    """
    b = group.numel()
    dev = group.device
    order = (group.double() + _rand((b,), dev, generator).double()).argsort()
    g_sorted = group[order]
    counts = torch.zeros(n_groups, dtype=torch.long, device=dev).index_add_(0, group, torch.ones_like(group))
    end = torch.cumsum(counts, 0)[g_sorted]
    start = end - counts[g_sorted]
    pos = torch.arange(b, device=dev)
    nxt = torch.where(pos + 1 < end, pos + 1, start)
    return torch.empty_like(order).scatter_(0, order, order[nxt])

"""On-device CSR sampling: structure of every subgraph, and the dense reference."""

import numpy as np
import pytest
import torch

from models.ot import sampling as S


def _bipartite(n_u=30, n_i=40, p=0.08, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.random((n_u, n_i)) < p
    m[0, :] = False  # user 0: isolated
    m[1, :] = False
    m[1, 0] = True  # user 1: one neighbour (item 0)
    u, i = np.nonzero(m)
    row = np.concatenate([u, i + n_u])
    col = np.concatenate([i + n_u, u])
    n = n_u + n_i
    dense = np.zeros((n, n), dtype=bool)
    dense[row, col] = True
    return S.csr_from_coo(row, col, n), dense


@pytest.mark.parametrize("source", ["A", "A2", "A2-materialised", "cluster"])
def test_subgraphs_are_distinct_neighbourhoods(source):
    csr, dense = _bipartite()
    n = dense.shape[0]
    two = (dense.astype(int) @ dense.astype(int)) > 0
    np.fill_diagonal(two, False)
    kw = {}
    if source == "A2-materialised":
        kw["a2"] = S.two_hop_csr(csr)
        source = "A2"
    if source == "cluster":
        node_cluster = torch.arange(n) % 4
        order = torch.argsort(node_cluster, stable=True)
        indptr = torch.zeros(5, dtype=torch.long)
        indptr[1:] = torch.cumsum(torch.bincount(node_cluster, minlength=4), 0)
        kw.update(clusters=S.CSR(indptr, order, n), node_cluster=node_cluster)
    centres = torch.arange(n)
    k1, k2 = 3, 2
    torch.manual_seed(0)
    nodes, valid = S.sample_subgraphs(csr, centres, k1, k2, source=source, **kw)
    assert nodes.shape == (n, 1 + k1 + k2)
    assert (nodes[:, -1] == centres).all()
    if source != "cluster":
        assert not valid[0]  # isolated: dropped (a cluster still has members)
    for b in valid.nonzero().flatten().tolist():
        row = nodes[b].tolist()
        c = row[-1]
        assert len(set(row)) == len(row)
        deg = int(dense[c].sum())
        hop1 = row[: min(k1, deg)]
        assert all(dense[c, v] for v in hop1)
        for v in row[min(k1, deg) : -1]:
            if source == "cluster":
                assert kw["node_cluster"][v] == kw["node_cluster"][c] or dense[c, v]
            else:
                assert two[c, v]  # from the next hop (bipartite: never a 1-hop node)


def test_fill_from_next_hop_when_few_neighbours():
    csr, dense = _bipartite()
    torch.manual_seed(1)
    nodes, valid = S.sample_subgraphs(csr, torch.tensor([1]), 3, 2, source="A")
    if valid[0]:
        row = nodes[0].tolist()
        assert row[0] == 30  # the one neighbour (item 0), then 2-hop users
        assert all(not dense[1, v] for v in row[1:-1])


def test_subgraph_adjacencies_match_dense():
    csr, dense = _bipartite(seed=3, p=0.2)
    n = dense.shape[0]
    two = (dense.astype(int) @ dense.astype(int)) > 0
    np.fill_diagonal(two, False)
    torch.manual_seed(2)
    nodes = torch.stack([torch.randperm(n)[:6] for _ in range(8)])
    adj = S.subgraph_adjacency(nodes, csr.edge_keys(), n)
    adj2 = S.shared_neighbour_adjacency(nodes, csr)
    a2m = S.subgraph_adjacency(nodes, S.two_hop_csr(csr).edge_keys(), n)
    for b in range(8):
        idx = nodes[b].numpy()
        np.testing.assert_array_equal(adj[b].numpy().astype(bool), dense[np.ix_(idx, idx)])
        np.testing.assert_array_equal(adj2[b].numpy().astype(bool), two[np.ix_(idx, idx)])
        np.testing.assert_array_equal(a2m[b].numpy().astype(bool), two[np.ix_(idx, idx)])


def test_large_graph_samples_without_dense_matrices():
    n_u = n_i = 200_000
    rng = np.random.default_rng(0)
    u = rng.integers(0, n_u, 1_000_000)
    i = rng.integers(0, n_i, 1_000_000) + n_u
    csr = S.csr_from_coo(np.concatenate([u, i]), np.concatenate([i, u]), n_u + n_i)
    nodes, valid = S.sample_subgraphs(csr, torch.randint(0, n_u + n_i, (64,)), 3, 10, source="A")
    assert nodes.shape == (64, 14) and valid.float().mean() > 0.8
    adj2 = S.shared_neighbour_adjacency(nodes, csr)
    assert adj2.shape == (64, 14, 14)


def test_group_derangement_is_a_uniform_cycle_within_each_group():
    from scipy.stats import chisquare

    group = torch.tensor([1, 0, 1, 0, 0, 1, 0, 2])  # groups of 4, 3 and 1 (alone: maps to itself)
    torch.manual_seed(0)
    cycles = {}
    for _ in range(3000):
        sigma = S.group_derangement(group, 3)
        assert (group[sigma] == group).all()
        assert sigma[7] == 7
        for g in (0, 1):
            members = (group == g).nonzero().flatten().tolist()
            seen, b = [], members[0]
            for _ in members:  # one cycle through every member, no fixed point
                seen.append(b)
                b = int(sigma[b])
            assert b == members[0] and sorted(seen) == members
        key = tuple(sigma[(group == 0).nonzero().flatten()].tolist())
        cycles[key] = cycles.get(key, 0) + 1
    assert len(cycles) == 6  # (4 - 1)! cyclic orders of group 0
    assert chisquare(list(cycles.values())).pvalue > 1e-3

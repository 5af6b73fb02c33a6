"""Optimal-transport building blocks: batched solvers, on-device sampling, losses.

Pure torch; nothing here imports RecBole.
"""

from .losses import distance_info_nce, embedding_info_nce, gsc_bce, info_nce
from .sampling import CSR, csr_from_coo, sample_subgraphs, shared_neighbour_adjacency, subgraph_adjacency
from .solvers import cost_matrix, gromov_wasserstein, gw_tensor, ipot, prune_cost, wasserstein

__all__ = [
    "CSR",
    "cost_matrix",
    "csr_from_coo",
    "distance_info_nce",
    "embedding_info_nce",
    "gromov_wasserstein",
    "gsc_bce",
    "gw_tensor",
    "info_nce",
    "ipot",
    "prune_cost",
    "sample_subgraphs",
    "shared_neighbour_adjacency",
    "subgraph_adjacency",
    "wasserstein",
]

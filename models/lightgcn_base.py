r"""LightGCN backbone shared by SimGCL, XSimGCL and LightGCNOT.

Same model as RecBole's ``LightGCN`` (He et al., "LightGCN: Simplifying and Powering
Graph Convolution Network for Recommendation", SIGIR 2020,
https://arxiv.org/abs/2002.02126), with four differences that matter to its subclasses:

* the normalised adjacency is built from COO indices with ``scipy.sparse.coo_matrix``
  (RecBole's ``dok_matrix`` path takes seconds on ml-1m and breaks on scipy >= 1.13);
* the binary graph is also kept as CSR index tensors on the device (:attr:`graph`), for
  on-device subgraph sampling;
* propagation goes through two hooks, :meth:`perturb` (called after every layer of a
  perturbed forward) and the class attribute :attr:`readout_start` (final embedding =
  mean of layers ``readout_start..L``), so subclasses never copy ``forward``;
* every differentiable row gather goes through :func:`gather_rows` (``index_select``),
  whose backward is repeatable on CPU with several threads, unlike ``x[index]``'s;
* the init step is a setting (``param_init``, for subclasses that offer it): RecBole's
  Xavier-uniform init, or none at all.

.. math::
    E^{(l+1)} = \hat A E^{(l)},\quad \hat A = D^{-1/2} A D^{-1/2},\quad
    E = \frac{1}{L + 1 - s} \sum_{l=s}^{L} E^{(l)}.

Loss terms (returned as a tuple, names in :attr:`loss_names`): BPR and
``reg_weight`` times the L2 norm of the batch's layer-0 embeddings.

Args (config keys; each subclass lists its defaults in ``config/<Name>.yaml``):
    embedding_size (int): 64.
    n_layers (int): 3.
    reg_weight (float): 1e-4.
    require_pow (bool): False.
    param_init (str): ``"xavier"`` (RecBole's ``xavier_uniform_initialization`` of every
        embedding and ``nn.Linear``: :math:`W \sim \mathcal U[-b, b]`,
        :math:`b = \sqrt{6 / (\text{fan}_\text{in} + \text{fan}_\text{out})}`) or ``"none"``
        (no init step: each module keeps what its constructor drew, an embedding
        :math:`\mathcal N(0, 1)`, as RecBole's models without their ``self.apply(...)`` line).
        Read only when the config has it; absent, ``"xavier"``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_uniform_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType

from .ot.sampling import CSR

__all__ = ["LightGCNBase", "bipartite_coo", "gather_rows", "normalized_adjacency", "propagate_symmetric"]


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along dim 0 (``index`` 1-D), with a deterministic backward on CPU.

    The backward of ``x[index]`` is ``index_put_(accumulate=True)``, which on CPU with
    more than one thread and at least 32768 elements adds float rows with racing atomic
    adds: repeated ids (a batch's users, subgraph nodes' shared neighbours) then sum in
    a different order every run, and two runs of the same seed drift apart. The backward
    of ``index_select`` is a serial ``index_add_``: bit-for-bit repeatable, and measured
    1.3-2x faster on this path (2048 x 32 rows: 186 vs 344 us forward+backward).
    """
    return x.index_select(0, index)


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``, whose backward is ``adj @ grad``."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad):
        return None, torch.sparse.mm(ctx.adj, grad)


# Called instead of the product when set: ``hook(adj, x, product)`` returns ``adj @ x``.
# ``ablate.fused`` sets it while several runs train side by side in one process, to
# multiply their embeddings by a shared adjacency in one wide product; None otherwise.
propagation_hook = None


def _symmetric_product(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _SymmetricSpMM.apply(adj, x)


def propagate_symmetric(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat A x` for the symmetric :math:`\hat A` of :func:`normalized_adjacency`.

    ``torch.sparse.mm``'s backward multiplies by :math:`\hat A^\top`, which it builds by
    transposing the COO indices and coalescing them again: on CUDA a sort of every edge
    per layer per step (pytorch/pytorch#141844 measured a transposed COO matmul ~50x
    slower than an untransposed one). :math:`\hat A` is its own transpose, bit for bit
    (``dinv[row] * dinv[col]`` over a symmetric edge list), so the backward reuses it and
    gives the same gradient (``tests/models/test_models.py``)."""
    if propagation_hook is not None:
        return propagation_hook(adj, x, _symmetric_product)
    return _SymmetricSpMM.apply(adj, x)


def bipartite_coo(inter: sp.coo_matrix, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric, deduplicated edge list of the user-item graph (items offset by n_users)."""
    m = sp.coo_matrix((np.ones(inter.nnz, dtype=np.float32), (inter.row, inter.col)), shape=(n_users, n_items))
    m.sum_duplicates()
    u, i = m.row.astype(np.int64), m.col.astype(np.int64) + n_users
    return np.concatenate([u, i]), np.concatenate([i, u])


def normalized_adjacency(row: np.ndarray, col: np.ndarray, n: int) -> torch.Tensor:
    r""":math:`D^{-1/2} A D^{-1/2}` as a coalesced torch COO tensor (``+1e-7`` on degrees,
    as in RecBole, so isolated nodes such as the padding id give zeros, not inf)."""
    deg = np.bincount(row, minlength=n).astype(np.float64) + 1e-7
    dinv = np.power(deg, -0.5)
    val = (dinv[row] * dinv[col]).astype(np.float32)
    idx = torch.from_numpy(np.stack([row, col]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(val), (n, n)).coalesce()


def _setting(config, key: str, default):
    """``config[key]``, or ``default`` where the config lacks it (RecBole's ``Config`` answers
    None for a key it does not hold; a plain dict raises KeyError)."""
    try:
        value = config[key]
    except KeyError:
        value = None
    return default if value is None else value


class LightGCNBase(GeneralRecommender):
    """LightGCN with hooks; see the module docstring."""

    input_type = InputType.PAIRWISE
    loss_names: tuple[str, ...] = ("bpr", "reg")
    readout_start: int = 0

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.latent_dim = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.require_pow = config["require_pow"]
        self.param_init = _setting(config, "param_init", "xavier")
        if self.param_init not in ("xavier", "none"):
            raise ValueError(f"param_init={self.param_init!r}: expected 'xavier' or 'none'")

        self.user_embedding = torch.nn.Embedding(self.n_users, self.latent_dim)
        self.item_embedding = torch.nn.Embedding(self.n_items, self.latent_dim)
        self.mf_loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self.restore_user_e = None
        self.restore_item_e = None

        n = self.n_users + self.n_items
        row, col = bipartite_coo(dataset.inter_matrix(form="coo"), self.n_users, self.n_items)
        self.n_nodes = n
        self.norm_adj_matrix = normalized_adjacency(row, col, n).to(self.device)
        order = np.lexsort((col, row))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(row, minlength=n), out=indptr[1:])
        self.graph = CSR(
            torch.from_numpy(indptr).to(self.device), torch.from_numpy(col[order]).to(self.device), n
        )
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform init of every embedding and linear layer (RecBole's default), unless
        ``param_init`` is ``"none"``: then every parameter stays as its constructor drew it."""
        if self.param_init == "xavier":
            self.apply(xavier_uniform_initialization)

    # -- propagation ---------------------------------------------------------------
    def get_ego_embeddings(self) -> torch.Tensor:
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)

    def perturb(self, emb: torch.Tensor, layer: int) -> torch.Tensor:
        """Hook applied after layer ``layer`` (1-based) of a perturbed forward. Identity here."""
        return emb

    def propagate(self, perturbed: bool = False) -> list[torch.Tensor]:
        """All layers ``[E0, E1, ..., EL]`` (``[N, d]`` each)."""
        emb = self.get_ego_embeddings()
        layers = [emb]
        for layer in range(1, self.n_layers + 1):
            emb = propagate_symmetric(self.norm_adj_matrix, emb)
            if perturbed:
                emb = self.perturb(emb, layer)
            layers.append(emb)
        return layers

    def readout(self, layers: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(layers[self.readout_start :], dim=1).mean(dim=1)

    def split(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.split(emb, [self.n_users, self.n_items])

    def forward(self, perturbed: bool = False):
        return self.split(self.readout(self.propagate(perturbed)))

    # -- losses --------------------------------------------------------------------
    def bpr_reg(self, interaction, user_all, item_all, extra_reg=()) -> tuple[torch.Tensor, torch.Tensor]:
        """``(BPR, reg_weight * reg)``; ``extra_reg`` tensors (e.g. GAT weights) join the L2 term."""
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        u = gather_rows(user_all, user)
        pos_scores = (u * gather_rows(item_all, pos)).sum(dim=1)
        neg_scores = (u * gather_rows(item_all, neg)).sum(dim=1)
        mf = self.mf_loss(pos_scores, neg_scores)
        reg = self.reg_loss(
            *extra_reg,
            self.user_embedding(user),
            self.item_embedding(pos),
            self.item_embedding(neg),
            require_pow=self.require_pow,
        )
        return mf, self.reg_weight * reg

    def _clear_cache(self) -> None:
        if self.restore_user_e is not None or self.restore_item_e is not None:
            self.restore_user_e, self.restore_item_e = None, None

    def calculate_loss(self, interaction):
        self._clear_cache()
        user_all, item_all = self.forward()
        return self.bpr_reg(interaction, user_all, item_all)

    def predict(self, interaction):
        user_all, item_all = self.forward()
        u = user_all[interaction[self.USER_ID]]
        i = item_all[interaction[self.ITEM_ID]]
        return (u * i).sum(dim=1)

    def full_sort_predict(self, interaction):
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.forward()
        u = self.restore_user_e[interaction[self.USER_ID]]
        return torch.matmul(u, self.restore_item_e.transpose(0, 1)).view(-1)

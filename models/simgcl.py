r"""SimGCL and its noise hook.

Yu et al., "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for
Recommendation", SIGIR 2022, https://arxiv.org/abs/2112.08679. Follows RecBole-GNN's
``simgcl.py``: after every layer of a perturbed forward

.. math::
    E^{(l)} \leftarrow E^{(l)} + \epsilon\, \operatorname{sign}(E^{(l)}) \odot
    \frac{U}{\lVert U \rVert_2},\quad U \sim \mathcal U[0, 1)^{N \times d},

the final embedding is the mean of layers ``1..L`` (layer 0 excluded), and the loss is
BPR + reg + ``lambda`` times InfoNCE (temperature ``temperature``, in-batch negatives)
between two perturbed forwards over the batch's unique users and items. The InfoNCE is
summed over those users and items (:attr:`SimGCL.cl_reduction`), as RecBole-GNN's
SimGCL does; its XSimGCL averages instead, and so does ours.

Checked number for number against RecBole-GNN's own SimGCL (loss terms, gradients,
scores of one ml-100k batch): ``tests/models/test_reference_recbole_gnn.py``.

Loss terms: ``("bpr", "reg", "cl")``.

Args (config keys, defaults in ``config/SimGCL.yaml``: what RecBole-GNN's SimGCL runs
with, i.e. its ``SimGCL.yaml`` over RecBole's ``overall.yaml``):
    embedding_size (int): 64.
    n_layers (int): 2.
    reg_weight (float): 1e-4.
    require_pow (bool): False. RecBole-GNN's SimGCL.yaml does not set it (its
        LightGCN.yaml and XSimGCL.yaml do), so RecBole's default applies: the L2 term is
        the sum of the rows' norms, not of their squares.
    lambda (float): 0.5, weight of the contrastive term.
    eps (float): 0.1, noise magnitude.
    temperature (float): 0.2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .lightgcn_base import LightGCNBase, gather_rows
from .ot.losses import embedding_info_nce

__all__ = ["SimGCL", "simgcl_noise"]


def simgcl_noise(emb: torch.Tensor, eps: float) -> torch.Tensor:
    """``sign(E) * normalize(U[0,1)) * eps``: row norm ``eps`` wherever ``E`` has no zeros."""
    return torch.sign(emb) * F.normalize(torch.rand_like(emb), dim=-1) * eps


class SimGCL(LightGCNBase):
    """SimGCL on the LightGCN backbone; see the module docstring."""

    loss_names = ("bpr", "reg", "cl")
    readout_start = 1
    #: how InfoNCE reduces over the batch's unique users (items): "sum" here, as
    #: RecBole-GNN's SimGCL; "mean" in XSimGCL, as RecBole-GNN's XSimGCL.
    cl_reduction = "sum"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_rate = config["lambda"]
        self.eps = config["eps"]
        self.temperature = config["temperature"]

    def perturb(self, emb: torch.Tensor, layer: int) -> torch.Tensor:
        return emb + simgcl_noise(emb, self.eps)

    def cl_loss(self, interaction, views_1, views_2) -> torch.Tensor:
        """``lambda * (InfoNCE(users) + InfoNCE(items))`` over the batch's unique ids (positive
        items only, as RecBole-GNN), each reduced by :attr:`cl_reduction`."""
        user = torch.unique(interaction[self.USER_ID])
        item = torch.unique(interaction[self.ITEM_ID])
        (u1, i1), (u2, i2) = views_1, views_2
        t, r = self.temperature, self.cl_reduction
        return self.cl_rate * (
            embedding_info_nce(gather_rows(u1, user), gather_rows(u2, user), t, reduction=r)
            + embedding_info_nce(gather_rows(i1, item), gather_rows(i2, item), t, reduction=r)
        )

    def calculate_loss(self, interaction):
        bpr, reg = super().calculate_loss(interaction)
        cl = self.cl_loss(interaction, self.forward(perturbed=True), self.forward(perturbed=True))
        return bpr, reg, cl

r"""SimGCL and its noise hook.

Yu et al., "Are Graph Augmentations Necessary? Simple Graph Contrastive Learning for
Recommendation", SIGIR 2022, https://arxiv.org/abs/2112.08679. Follows RecBole-GNN's
``simgcl.py``: after every layer of a perturbed forward

.. math::
    E^{(l)} \leftarrow E^{(l)} + \epsilon\, \operatorname{sign}(E^{(l)}) \odot
    \frac{U}{\lVert U \rVert_2},\quad U \sim \mathcal U[0, 1)^{N \times d},

the final embedding is the mean of layers ``1..L`` (layer 0 excluded), and the loss is
BPR + reg + ``lambda`` times InfoNCE (temperature ``temperature``, summed, in-batch
negatives) between two perturbed forwards over the batch's unique users and items.

Loss terms: ``("bpr", "reg", "cl")``.

Args (config keys, defaults in ``config/SimGCL.yaml``, RecBole-GNN's):
    embedding_size (int): 64.
    n_layers (int): 2.
    reg_weight (float): 1e-4.
    require_pow (bool): True.
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

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_rate = config["lambda"]
        self.eps = config["eps"]
        self.temperature = config["temperature"]

    def perturb(self, emb: torch.Tensor, layer: int) -> torch.Tensor:
        return emb + simgcl_noise(emb, self.eps)

    def cl_loss(self, interaction, views_1, views_2) -> torch.Tensor:
        """``lambda * (InfoNCE(users) + InfoNCE(items))`` over the batch's unique ids."""
        user = torch.unique(interaction[self.USER_ID])
        item = torch.unique(interaction[self.ITEM_ID])
        (u1, i1), (u2, i2) = views_1, views_2
        return self.cl_rate * (
            embedding_info_nce(gather_rows(u1, user), gather_rows(u2, user), self.temperature)
            + embedding_info_nce(gather_rows(i1, item), gather_rows(i2, item), self.temperature)
        )

    def calculate_loss(self, interaction):
        bpr, reg = super().calculate_loss(interaction)
        cl = self.cl_loss(interaction, self.forward(perturbed=True), self.forward(perturbed=True))
        return bpr, reg, cl

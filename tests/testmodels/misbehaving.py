"""The test models of ``run_ablate.py`` (imported as ``models.misbehaving``)."""

from __future__ import annotations

import os

import torch
from recbole.model.general_recommender.bpr import BPR

# What CUDA's caching allocator says when a GPU is full (torch 2.x).
OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
               "1.25 GiB is free.")


class OOMBPR(BPR):
    """BPR that runs out of memory on its first training batch."""

    def calculate_loss(self, interaction):
        raise torch.OutOfMemoryError(OOM_MESSAGE)


class NoisyBPR(BPR):
    """BPR whose initial embeddings are moved by noise no seed controls."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        g = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        with torch.no_grad():
            for table in (self.user_embedding.weight, self.item_embedding.weight):
                table.add_(torch.randn(table.shape, generator=g) * table.std())

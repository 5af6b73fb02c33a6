r"""Contrastive losses shared by every model in this package.

One InfoNCE helper serves SimGCL, XSimGCL, the OT InfoNCE form and NCL's prototype
term, so the copies cannot drift apart (RecBole-GNN has two).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .solvers import safe_normalize

__all__ = ["info_nce", "embedding_info_nce", "gsc_bce", "distance_info_nce", "ot_contrast_loss"]


def info_nce(logits: Tensor, targets: Tensor | None = None, reduction: str = "sum") -> Tensor:
    r"""InfoNCE :math:`-\log \frac{e^{s_{i,t_i}}}{\sum_j e^{s_{ij}}}` over rows of ``logits``.

    Args:
        logits: ``[N, M]`` scores (already divided by the temperature).
        targets: ``[N]`` index of each row's positive (default: the diagonal).
        reduction: ``"sum"`` (RecBole-GNN, NCL) or ``"mean"``.
    """
    if targets is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets, reduction=reduction)


def embedding_info_nce(x1: Tensor, x2: Tensor, temperature: float, reduction: str = "sum") -> Tensor:
    r"""SimGCL's view contrast: cosine of every ``x1_i`` with every ``x2_j`` over ``tau``,
    positives on the diagonal, in-batch negatives."""
    z1 = safe_normalize(x1)
    z2 = safe_normalize(x2)
    return info_nce(z1 @ z2.t() / temperature, reduction=reduction)


def _weighted_mean(loss: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def _exp_neg(d: Tensor) -> Tensor:
    """``exp(-d)`` with ``d`` clamped below at ``-log(dtype max) / 2`` (-44 in float32).

    GSC takes ``exp(-d/t)`` unclamped. W distances are non-negative, but a GW distance
    evaluated with an unrounded plan can dip below 0 (the linearisation is a sum of
    squares only at exact marginals), so the floor is far below 0: it changes nothing at
    GSC's settings and keeps the logit, BCE's ``softplus`` of it and its gradient finite.
    """
    return torch.exp(-d.clamp_min(-math.log(torch.finfo(d.dtype).max) / 2.0))


def gsc_bce(d_pos: Tensor, d_neg: Tensor, t: float, weight: Tensor | None = None) -> Tensor:
    r"""GSC's loss: ``BCEWithLogits(exp(-d / t), label)``, positives labelled 1, mean over
    every pair (GSC's ``b_xent`` over ``[B positives, 2B negatives]``).

    ``-d/t`` is clamped at ``log(dtype max) / 2`` (:func:`_exp_neg`), so the "logit"
    ``exp(-d/t)`` cannot overflow; above that it is GSC's.

    Args:
        d_pos: ``[B]`` distances of positive pairs.
        d_neg: ``[B, M]`` distances of negative pairs.
        t: temperature (GSC: 0.01 for Wasserstein, 0.1 for Gromov–Wasserstein).
        weight: optional ``[B]`` weight of each subgraph (0 masks it out).
    """
    d = torch.cat([d_pos.reshape(-1, 1), d_neg.reshape(d_pos.numel(), -1)], dim=1)
    lbl = torch.zeros_like(d)
    lbl[:, 0] = 1.0
    logits = _exp_neg(d / t)
    loss = F.binary_cross_entropy_with_logits(logits, lbl, reduction="none")
    w = None if weight is None else weight.reshape(-1, 1).expand_as(loss)
    return _weighted_mean(loss, w)


def distance_info_nce(d_pos: Tensor, d_neg: Tensor, t: float, weight: Tensor | None = None) -> Tensor:
    r"""InfoNCE over distances: logits ``-d / t``, positive in column 0, (weighted) mean."""
    logits = torch.cat([d_pos.reshape(-1, 1), d_neg.reshape(d_pos.numel(), -1)], dim=1) / -t
    targets = torch.zeros(d_pos.numel(), dtype=torch.long, device=d_pos.device)
    return _weighted_mean(info_nce(logits, targets, reduction="none"), weight)


def ot_contrast_loss(d: Tensor, coef: Tensor, form: str = "bce") -> Tensor:
    r"""Every OT contrast loss of a batch in one pass: several distances (W, GW), every
    subgraph and its negatives, user and item groups at once.

    Equal to the sum over distances ``k`` and groups ``g`` of ``mix_k *`` :func:`gsc_bce`
    (or :func:`distance_info_nce`) of group ``g`` with temperature ``t_k``, but a handful of
    kernels instead of a handful per (distance, group): on a GPU this term is bound by
    kernel launches, not arithmetic.

    Args:
        d: ``[K, P, B]`` distances already divided by their temperature ``t_k``; row
            ``p = 0`` is subgraph ``b``'s positive pair, rows ``1..P-1`` its negatives.
        coef: ``[K, B]`` weight of subgraph ``b`` in distance ``k``'s loss: ``mix_k`` times
            its mask over its group's normaliser (GSC's mean over the group's pairs for
            ``"bce"``, over its subgraphs for ``"infonce"``); 0 drops a subgraph.
        form: ``"bce"`` (GSC: ``BCEWithLogits(exp(-d), label)``, see :func:`gsc_bce`) or
            ``"infonce"`` (cross-entropy of logits ``-d``, the positive in row 0).
    """
    if form == "bce":
        logits = _exp_neg(d)
        label = torch.zeros_like(logits)
        label[:, 0] = 1.0
        per = F.binary_cross_entropy_with_logits(logits, label, reduction="none").sum(dim=1)
    elif form == "infonce":
        per = torch.logsumexp(-d, dim=1) + d[:, 0]
    else:
        raise ValueError(f"unknown OT loss form {form!r} (expected 'bce' or 'infonce')")
    return (per * coef).sum()

"""Metric-learning losses on a batch of L2-normalised descriptors with place labels.

``multi_similarity`` (Wang et al., CVPR 2019) with its miner is what GSV-Cities, MixVPR, SALAD and
BoQ train with (alpha 1, beta 50, lambda (base) 0, miner epsilon 0.1, cosine similarity):

* miner, per anchor i: a negative j is kept when ``S_ij + eps > min_k S_ik`` over i's positives, a
  positive when ``S_ij - eps < max_k S_ik`` over i's negatives;
* loss: mean over the batch's anchors of
  ``1/alpha log(1 + sum_pos exp(-alpha (S - lambda))) + 1/beta log(1 + sum_neg exp(beta (S - lambda)))``
  over the mined pairs (an anchor without mined pairs contributes 0, as in pytorch-metric-learning's
  mean reduction).

``triplet`` (hardest positive and negative per anchor, margin on cosine distance) and
``contrastive`` (all pairs: positives pulled to similarity 1, negatives pushed below ``margin``)
are the alternatives.
"""
from __future__ import annotations

import torch

from vpr_ros.errors import ConfigError

LOSSES = ('multi_similarity', 'triplet', 'contrastive')


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive mask without the diagonal, negative mask), both (B, B) bool."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def ms_mine(sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
            epsilon: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-similarity miner: the (positive, negative) pair masks it keeps."""
    big = torch.finfo(sim.dtype).max
    min_pos = torch.where(pos, sim, torch.full_like(sim, big)).min(dim=1, keepdim=True).values
    max_neg = torch.where(neg, sim, torch.full_like(sim, -big)).max(dim=1, keepdim=True).values
    return pos & (sim - epsilon < max_neg), neg & (sim + epsilon > min_pos)


def _log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_{mask} exp(x)) per row, stable; 0 for rows with an empty mask."""
    x = torch.where(mask, x, torch.full_like(x, -torch.inf))
    zeros = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
    return torch.logsumexp(torch.cat([zeros, x], dim=1), dim=1)


def multi_similarity_loss(desc: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, beta: float = 50.0,
                          base: float = 0.0, epsilon: float = 0.1) -> tuple[torch.Tensor, float]:
    """(loss, fraction of anchors with mined pairs)."""
    sim = desc @ desc.T
    pos, neg = pair_masks(labels)
    pos, neg = ms_mine(sim.detach(), pos, neg, epsilon)
    loss = (_log1p_sum_exp(-alpha * (sim - base), pos) / alpha
            + _log1p_sum_exp(beta * (sim - base), neg) / beta)
    active = (pos.any(dim=1) | neg.any(dim=1)).float().mean().item()
    return loss.mean(), active


def triplet_loss(desc: torch.Tensor, labels: torch.Tensor, margin: float = 0.1) -> tuple[torch.Tensor, float]:
    """Hardest positive / hardest negative per anchor on cosine distance 1 - S."""
    sim = desc @ desc.T
    pos, neg = pair_masks(labels)
    has = pos.any(dim=1) & neg.any(dim=1)
    hardest_pos = torch.where(pos, sim, torch.full_like(sim, 2.0)).min(dim=1).values
    hardest_neg = torch.where(neg, sim, torch.full_like(sim, -2.0)).max(dim=1).values
    losses = torch.relu(hardest_neg - hardest_pos + margin) * has
    return losses.sum() / has.sum().clamp(min=1), float((losses > 0).float().mean().item())


def contrastive_loss(desc: torch.Tensor, labels: torch.Tensor,
                     margin: float = 0.5) -> tuple[torch.Tensor, float]:
    """Positives: (1 - S)^2; negatives: relu(S - margin)^2; mean over the pairs of each kind."""
    sim = desc @ desc.T
    pos, neg = pair_masks(labels)
    pos_term = ((1 - sim) ** 2 * pos).sum() / pos.sum().clamp(min=1)
    neg_viol = torch.relu(sim - margin) * neg
    neg_term = (neg_viol ** 2).sum() / neg.sum().clamp(min=1)
    return pos_term + neg_term, float((neg_viol > 0).float().sum().item() / max(int(neg.sum()), 1))


def batch_loss(name: str, desc: torch.Tensor, labels: torch.Tensor,
               settings: dict) -> tuple[torch.Tensor, float]:
    """Dispatch on the ``loss`` setting; returns (loss, the active fraction a progress bar can show)."""
    if name == 'multi_similarity':
        return multi_similarity_loss(desc, labels, float(settings['ms_alpha']), float(settings['ms_beta']),
                                     float(settings['ms_base']), float(settings['ms_epsilon']))
    if name == 'triplet':
        return triplet_loss(desc, labels, float(settings['margin']))
    if name == 'contrastive':
        return contrastive_loss(desc, labels, float(settings['margin']))
    raise ConfigError(f'unknown loss {name!r}; choose one of {", ".join(LOSSES)}')

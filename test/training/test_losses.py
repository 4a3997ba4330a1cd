"""Multi-similarity loss and miner against their formulas; triplet and contrastive basics."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from vpr_ros.training.losses import contrastive_loss, ms_mine, multi_similarity_loss, pair_masks, triplet_loss


def _batch(seed=0, n_places=3, k=2, dim=8):
    g = torch.Generator().manual_seed(seed)
    desc = F.normalize(torch.randn(n_places * k, dim, generator=g), dim=1)
    labels = torch.arange(n_places).repeat_interleave(k)
    return desc, labels


def test_miner_keeps_exactly_the_informative_pairs():
    desc, labels = _batch()
    sim = desc @ desc.T
    pos, neg = pair_masks(labels)
    kp, kn = ms_mine(sim, pos, neg, 0.1)
    for i in range(len(labels)):
        ps = [j for j in range(len(labels)) if pos[i, j]]
        ns = [j for j in range(len(labels)) if neg[i, j]]
        min_pos, max_neg = min(sim[i, ps]), max(sim[i, ns])
        for j in ps:
            assert bool(kp[i, j]) == bool(sim[i, j] - 0.1 < max_neg)
        for j in ns:
            assert bool(kn[i, j]) == bool(sim[i, j] + 0.1 > min_pos)
        assert not kp[i, i] and not kn[i, i]


def test_ms_loss_matches_the_formula():
    desc, labels = _batch(1)
    loss, _ = multi_similarity_loss(desc, labels, alpha=1.0, beta=50.0, base=0.0, epsilon=0.1)
    sim = (desc @ desc.T).numpy()
    pos, neg = pair_masks(labels)
    kp, kn = ms_mine(torch.from_numpy(sim), pos, neg, 0.1)
    want = []
    for i in range(len(labels)):
        p = sim[i, kp[i].numpy()]
        n = sim[i, kn[i].numpy()]
        want.append(math.log1p(np.exp(-1.0 * p).sum()) / 1.0 + math.log1p(np.exp(50.0 * n).sum()) / 50.0)
    assert abs(float(loss) - float(np.mean(want))) < 1e-5


def test_losses_fall_when_places_separate():
    labels = torch.arange(3).repeat_interleave(2)
    centres = torch.eye(8)[:3]
    noise = 0.01 * torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    good = F.normalize(centres[labels] + noise, dim=1)
    bad = F.normalize(torch.ones(6, 8) + noise, dim=1)
    for fn in (multi_similarity_loss, triplet_loss, contrastive_loss):
        assert float(fn(good, labels)[0]) < float(fn(bad, labels)[0]), fn.__name__
    assert float(triplet_loss(good, labels)[0]) == 0.0


def test_ms_loss_has_gradients():
    desc, labels = _batch(2)
    desc.requires_grad_(True)
    loss, active = multi_similarity_loss(desc, labels)
    loss.backward()
    assert desc.grad is not None and torch.isfinite(desc.grad).all() and 0 < active <= 1

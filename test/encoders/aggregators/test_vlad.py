"""The official AnyLoc / SegVLAD vocabulary form (plain-mean cosine k-means) against a direct reference."""
import numpy as np
import pytest

from vpr_ros.encoders.aggregators import vlad
from vpr_ros.errors import VprError


def clustered(n_per: int = 40, k: int = 5, dim: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(k, dim))
    x = np.concatenate([a + 0.35 * rng.normal(size=(n_per, dim)) for a in axes])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_kmeans(x: np.ndarray, init: np.ndarray, iters: int = 100, tol: float = 1e-4) -> np.ndarray:
    """The official update written out point by point: cosine assignment, centre = mean of members."""
    c = init.astype(np.float64).copy()
    for _ in range(iters):
        labels = []
        for p in x:
            sims = [p @ ck / max(np.linalg.norm(ck), 1e-12) for ck in c]
            labels.append(int(np.argmax(sims)))
        labels = np.array(labels)
        new = c.copy()
        for j in range(len(c)):
            if (labels == j).any():
                new[j] = x[labels == j].mean(axis=0)
        change = ((new - c) ** 2).sum()
        c = new
        if change <= tol:
            break
    return c


def reference_vlad(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """AnyLoc's VLAD.generate (hard, intra_norm, cosine): residuals to the raw centres."""
    k, d = c.shape
    out = np.zeros(k * d)
    for j in range(k):
        members = [p for p in x if int(np.argmax([p @ ck / np.linalg.norm(ck) for ck in c])) == j]
        if members:
            s = np.sum([p - c[j] for p in members], axis=0)
            out[j * d:(j + 1) * d] = s / np.linalg.norm(s)
    return out / np.linalg.norm(out)


def test_mean_kmeans_equals_the_reference_update():
    x = clustered()
    init = x[[0, 50, 90, 130, 170]]
    ours = vlad.cosine_kmeans_means(x, 5, init=init)
    ref = reference_kmeans(x, init)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    norms = np.linalg.norm(ours, axis=1)
    assert (norms < 0.99).all()  # means of unit vectors: not re-normalised


def test_fit_vocabulary_mean_centres_are_a_fixed_point():
    x = clustered(seed=3)
    c = vlad.fit_vocabulary(x, 5, cosine=True, seed=1, centres='mean')
    labels = vlad.assign(x, c, cosine=True)
    for j in range(5):
        np.testing.assert_allclose(c[j], x[labels == j].mean(axis=0), atol=1e-3)
    unit = vlad.fit_vocabulary(x, 5, cosine=True, seed=1, centres='unit')
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)


def test_official_form_vlad_equals_the_reference_formula():
    x = clustered(seed=5)
    c = vlad.fit_vocabulary(x, 5, cosine=True, seed=0, centres='mean')
    query = clustered(n_per=7, seed=9)
    ours = vlad.vlad(query, c, cosine=True)
    ref = reference_vlad(query.astype(np.float64), c.astype(np.float64))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # Against unit centres the same assignment gives other residuals, hence another descriptor.
    unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    assert float(ours @ vlad.vlad(query, unit, cosine=True)) < 0.999


def test_unknown_centre_form():
    with pytest.raises(VprError, match='centres'):
        vlad.fit_vocabulary(clustered(), 5, centres='median')


def test_torch_vlad_equals_numpy_vlad():
    """The form exported graphs run (members summed minus count x centre) equals the numpy VLAD,
    with an empty word and centres of norm below 1 (the 'mean' form)."""
    import torch

    rng = np.random.default_rng(3)
    feats = np.abs(rng.standard_normal((2, 5, 7, 16))).astype(np.float32)  # positive: word 5 gets none
    feats /= np.linalg.norm(feats, axis=-1, keepdims=True)
    centres = (0.2 * np.abs(rng.standard_normal((6, 16)))).astype(np.float32)
    centres[5] = -0.2
    got = vlad.vlad_torch(torch.from_numpy(feats), torch.from_numpy(centres)).numpy()
    want = np.stack([vlad.vlad(f.reshape(-1, 16), centres, cosine=True) for f in feats])
    assert np.all(got.reshape(2, 6, 16)[:, 5] == 0)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

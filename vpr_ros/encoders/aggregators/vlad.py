"""Hard-assignment VLAD (Jegou 2010; Arandjelovic & Zisserman 2013 "All about VLAD").

The one implementation shared by sift_vlad (RootSIFT), anyloc_vlad (deep dense features) and
SegVLAD (per-SuperSegment VLAD). Vocabularies are fitted with faiss k-means; ``cosine=True``
fits spherical k-means and assigns by cosine similarity (AnyLoc / SegVLAD), otherwise by L2.
"""
from __future__ import annotations

import numpy as np

from vpr_ros.errors import VprError


def fit_vocabulary(descriptors: np.ndarray, k: int, cosine: bool = True, seed: int = 0,
                   niter: int = 25, max_points: int = 100_000) -> np.ndarray:
    """k-means centres (k, D) float32 of ``descriptors`` (subsampled to ``max_points``)."""
    import faiss

    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise VprError(f'VLAD vocabulary of {k} words needs at least {k} local descriptors, got {len(x)}')
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    if cosine:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = faiss.Kmeans(x.shape[1], int(k), niter=niter, seed=seed, spherical=cosine,
                      max_points_per_centroid=max(256, len(x) // k + 1), verbose=False)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(descriptors: np.ndarray, centers: np.ndarray, cosine: bool = True) -> np.ndarray:
    """Index of the nearest centre for each descriptor (cosine: argmax <f, normalize(c)>)."""
    x = np.asarray(descriptors, np.float32)
    c = np.asarray(centers, np.float32)
    if cosine:
        cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return np.argmax(x @ cn.T, axis=1)
    d2 = (x * x).sum(1, keepdims=True) - 2.0 * x @ c.T + (c * c).sum(1)[None]
    return np.argmin(d2, axis=1)


def normalize_vlad(v: np.ndarray, k: int, power: bool = False) -> np.ndarray:
    """Optional signed square root, then intra-normalisation per word, then global L2.

    ``v``: (..., k*D). Words with no descriptors stay zero.
    """
    shape = v.shape
    v = v.reshape(*shape[:-1], k, -1).astype(np.float32)
    if power:
        v = np.sign(v) * np.sqrt(np.abs(v))
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    v = v.reshape(shape)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def vlad(descriptors: np.ndarray, centers: np.ndarray, cosine: bool = True,
         power: bool = False) -> np.ndarray:
    """VLAD vector (k*D,) of one image's local descriptors: sum of residuals to the assigned word."""
    k, dim = centers.shape
    x = np.asarray(descriptors, np.float32)
    if len(x) == 0:
        return np.zeros(k * dim, np.float32)
    labels = assign(x, centers, cosine)
    residuals = x - centers[labels]
    v = np.zeros((k, dim), np.float32)
    np.add.at(v, labels, residuals)
    return normalize_vlad(v.reshape(-1), k, power)

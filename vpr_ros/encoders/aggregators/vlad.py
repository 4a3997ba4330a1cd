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


def vlad_of_sets(membership: np.ndarray, descriptors: np.ndarray, centers: np.ndarray,
                 cosine: bool = True, power: bool = False) -> np.ndarray:
    """VLAD vectors (M, k*D) float32 of M sets of one image's local descriptors at once.

    ``membership``: (M, T) boolean, row m marks which of the T ``descriptors`` (T, D) belong to
    set m (sets may overlap: SegVLAD SuperSegments). Every descriptor is assigned to its word once;
    for each word k with descriptor subset T_k, ``V_k = membership[:, T_k] @ R[T_k]`` sums the
    residuals of each set's members in that word (one (M x |T_k|) x (|T_k| x D) product per word).
    Then intra-normalisation per word and global L2 (``normalize_vlad``).
    """
    k, dim = centers.shape
    member = np.asarray(membership, dtype=bool)
    x = np.asarray(descriptors, np.float32)
    if member.ndim != 2 or member.shape[1] != len(x):
        raise VprError(f'membership {member.shape} does not match {len(x)} descriptors')
    out = np.zeros((len(member), k, dim), np.float32)
    if len(x) == 0 or len(member) == 0:
        return out.reshape(len(member), k * dim)
    labels = assign(x, centers, cosine)
    residuals = x - np.asarray(centers, np.float32)[labels]
    weights = member.astype(np.float32)
    for word in np.unique(labels):
        cols = np.flatnonzero(labels == word)
        out[:, word] = weights[:, cols] @ residuals[cols]
    return normalize_vlad(out.reshape(len(member), k * dim), k, power)


def vlad(descriptors: np.ndarray, centers: np.ndarray, cosine: bool = True,
         power: bool = False) -> np.ndarray:
    """VLAD vector (k*D,) of one image's local descriptors: sum of residuals to the assigned word."""
    x = np.asarray(descriptors, np.float32)
    return vlad_of_sets(np.ones((1, len(x)), bool), x, centers, cosine, power)[0]

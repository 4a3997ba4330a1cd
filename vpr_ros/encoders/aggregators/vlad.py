"""Hard-assignment VLAD (Jegou 2010; Arandjelovic & Zisserman 2013 "All about VLAD").

The one implementation shared by sift_vlad (RootSIFT), anyloc_vlad (deep dense features) and
SegVLAD (per-SuperSegment VLAD). ``cosine=True`` fits a cosine vocabulary and assigns by cosine
similarity to the normalised centres (AnyLoc / SegVLAD), otherwise L2 k-means and L2 assignment.

Two forms of cosine vocabulary (``centres``):

* ``'mean'`` -- the official AnyLoc / SegVLAD form (``fast_pytorch_kmeans.KMeans(mode='cosine')``):
  Lloyd iterations that assign each descriptor to the centre of highest cosine similarity and move
  every centre to the **plain mean** of its members, never re-normalised (norm < 1). Residuals are
  then taken against these means. Initial centres: ``k`` distinct random descriptors (seeded);
  at most ``niter`` iterations (official: 100), stopping once the summed squared centre change is
  at most 1e-4 (official ``tol``). One deliberate difference: a centre that loses all members keeps
  its previous position (the official update turns it into a zero vector, a dead word).
* ``'unit'`` -- spherical k-means (faiss): centres re-normalised to unit length after every update.
  The encoders' default, by measurement (docs/encoders.md, "Choosing an encoder").
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vpr_ros.errors import VprError
from vpr_ros.textio import short_repr
from vpr_ros.threadpools import blas_threads_for_fitting

CENTRE_FORMS = ('mean', 'unit')
MEAN_KMEANS_ITERATIONS = 100  # fast_pytorch_kmeans' max_iter default, as AnyLoc / SegVLAD call it
MEAN_KMEANS_TOL = 1e-4        # its tol: stop when sum((new - old)^2) <= tol


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_kmeans_means(x: np.ndarray, k: int, seed: int = 0, niter: int = MEAN_KMEANS_ITERATIONS,
                        tol: float = MEAN_KMEANS_TOL, init: np.ndarray | None = None) -> np.ndarray:
    """Cosine k-means with plain-mean centres (the official AnyLoc / SegVLAD vocabulary), (k, D) float32.

    ``x``: (N, D) descriptors (used as given; callers pass unit rows). ``init``: initial centres,
    else ``k`` distinct random rows of ``x``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if init is None:
        init = x[np.sort(np.random.default_rng(seed).choice(len(x), int(k), replace=False))]
    centres = np.array(init, dtype=np.float32, copy=True)
    with blas_threads_for_fitting():
        for _ in range(int(niter)):
            labels = np.argmax(x @ _unit_rows(centres).T, axis=1)
            counts = np.bincount(labels, minlength=len(centres))
            filled = counts > 0
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
            new = centres.copy()  # members summed per centre: one pass over the label-sorted rows
            new[filled] = (np.add.reduceat(x[np.argsort(labels, kind='stable')], starts, axis=0)
                           / counts[filled, None]).astype(np.float32)
            change = float(((new - centres) ** 2).sum())
            centres = new
            if change <= tol:
                break
    return centres


def fit_vocabulary(descriptors: np.ndarray, k: int, cosine: bool = True, seed: int = 0,
                   niter: int = 25, max_points: int = 100_000, centres: str = 'unit') -> np.ndarray:
    """k-means centres (k, D) float32 of ``descriptors`` (subsampled to ``max_points``).

    ``centres`` (cosine only): ``'mean'`` the official plain-mean centres (``niter`` is then
    ``MEAN_KMEANS_ITERATIONS``), ``'unit'`` faiss spherical k-means (see the module docstring).
    """
    import faiss

    if centres not in CENTRE_FORMS:
        raise VprError(f'VLAD centres must be one of {CENTRE_FORMS}, got {short_repr(centres)}')
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise VprError(f'VLAD vocabulary of {k} words needs at least {k} local descriptors, got {len(x)}')
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    if cosine:
        x = _unit_rows(x)
        if centres == 'mean':
            return cosine_kmeans_means(x, k, seed)
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


def vlad_torch(features: Any, centers: Any) -> Any:
    """``vlad`` (cosine, no power law) of each image's dense features in torch, as exported graphs run
    it: (N, rows, cols, D) unit features, (k, D) centres -> (N, k*D). The residual sum of word k is
    taken as sum(members) - count * centre (one product for every word at once)."""
    import torch

    n, dim = features.shape[0], features.shape[-1]
    x = features.reshape(n, -1, dim)
    unit = torch.nn.functional.normalize(centers, dim=1, eps=1e-12)
    onehot = torch.nn.functional.one_hot((x @ unit.T).argmax(-1), centers.shape[0]).to(x.dtype)  # N, T, k
    v = onehot.transpose(1, 2) @ x - onehot.sum(1).unsqueeze(-1) * centers
    v = torch.nn.functional.normalize(v, dim=-1, eps=1e-12).reshape(n, -1)
    return torch.nn.functional.normalize(v, dim=-1, eps=1e-12)

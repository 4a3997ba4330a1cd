"""Mutual nearest neighbours + ratio test from one distance matrix, against OpenCV's matcher."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vpr_ros.matching.descriptor_matching import mutual_ratio_matches, squared_distances


def opencv_matches(query: np.ndarray, place: np.ndarray, ratio: float, norm: int) -> set[tuple[int, int]]:
    """The reference: OpenCV's brute-force matcher both ways (the implementation this replaced)."""
    matcher = cv2.BFMatcher(norm)
    if norm == cv2.NORM_L2:
        query, place = query.astype(np.float32), place.astype(np.float32)
    back = {m.queryIdx: m.trainIdx for m in matcher.match(place, query)}
    return {(m[0].queryIdx, m[0].trainIdx) for m in matcher.knnMatch(query, place, k=2)
            if m[0].distance < ratio * m[1].distance and back[m[0].trainIdx] == m[0].queryIdx}


def noisy_pair(rng: np.random.Generator, n: int, dim: int, noise: int) -> tuple[np.ndarray, np.ndarray]:
    """A place set and a query set of which the first 2/3 are perturbed copies of place rows."""
    place = rng.integers(0, 256, (n, dim)).astype(np.uint8)
    shared = rng.permutation(n)[:2 * n // 3]
    query = rng.integers(0, 256, (n, dim)).astype(np.int64)
    query[:len(shared)] = place[shared].astype(np.int64) + rng.integers(-noise, noise + 1, (len(shared), dim))
    return np.clip(query, 0, 255).astype(np.uint8), place


@pytest.mark.parametrize('ratio', [0.6, 0.8, 0.95])
def test_rootsift_matches_equal_opencv(ratio: float) -> None:
    rng = np.random.default_rng(3)
    query, place = noisy_pair(rng, 400, 128, 40)
    ours = mutual_ratio_matches(query, place, ratio, binary=False)
    assert ours.dtype == np.int64 and ours.shape[1] == 2
    assert set(map(tuple, ours.tolist())) == opencv_matches(query, place, ratio, cv2.NORM_L2)
    assert len(ours) > 100  # the planted pairs are found, so the comparison is not of empty sets


def test_binary_matches_equal_opencv() -> None:
    rng = np.random.default_rng(4)
    query, place = noisy_pair(rng, 300, 32, 0)
    flips = rng.random(query.shape) < 0.1  # ORB-like: some bytes of each shared descriptor differ
    query = np.where(flips, rng.integers(0, 256, query.shape), query).astype(np.uint8)
    ours = mutual_ratio_matches(query, place, 0.8, binary=True)
    assert set(map(tuple, ours.tolist())) == opencv_matches(query, place, 0.8, cv2.NORM_HAMMING)
    assert len(ours) > 100


def test_float_descriptors_and_exact_integer_distances() -> None:
    rng = np.random.default_rng(5)
    query, place = noisy_pair(rng, 200, 128, 30)
    exact = ((query[:, None, :].astype(np.int64) - place[None].astype(np.int64)) ** 2).sum(axis=2)
    assert np.array_equal(squared_distances(query, place), exact)  # float32, yet exact
    as_float = mutual_ratio_matches(query.astype(np.float64) / 7, place.astype(np.float64) / 7, 0.8, False)
    assert np.array_equal(as_float, mutual_ratio_matches(query, place, 0.8, False))


def test_ties_go_to_the_lower_index_and_fail_the_ratio_test() -> None:
    rng = np.random.default_rng(6)
    place = rng.integers(0, 256, (10, 128)).astype(np.uint8)
    place[7] = place[2]                      # two equally near place rows
    query = place[[2, 5]].copy()
    pairs = mutual_ratio_matches(query, place, 1.0, False)
    assert pairs.tolist() == [[1, 5]]        # row 0's nearest two tie: 0 < 1.0 * 0 is false
    assert mutual_ratio_matches(query[:1], place, 0.8, False).shape == (0, 2)  # one row: no second nearest

import numpy as np
import pytest

from vpr_ros.encoders.segments import GraphSegmenter, SlicSegmenter, masks_from_labels
from vpr_ros.encoders.supersegments import (
    delaunay_adjacency,
    expand,
    patch_membership,
    segment_centroids,
    supersegment_masks,
)


def zigzag(n):
    """Points (i, i % 2): the Delaunay triangles are (i, i+1, i+2), so i ~ j iff |i - j| <= 2."""
    return np.array([(float(i), float(i % 2)) for i in range(n)])


def test_delaunay_adjacency_of_known_triangulation():
    adj = delaunay_adjacency(zigzag(8))
    i, j = np.indices((8, 8))
    np.testing.assert_array_equal(adj, np.abs(i - j) <= 2)


def test_k_hop_expansion():
    adj = delaunay_adjacency(zigzag(8))
    np.testing.assert_array_equal(expand(adj, 0), np.eye(8, dtype=bool))
    np.testing.assert_array_equal(expand(adj, 1), adj)
    hops = np.ceil(np.abs(np.subtract.outer(np.arange(8), np.arange(8))) / 2)
    for k in (2, 3):
        np.testing.assert_array_equal(expand(adj, k), hops <= k)
    assert expand(adj, 3)[0].tolist() == [True] * 7 + [False]  # segment 7 is 4 hops from 0
    with pytest.raises(ValueError):
        expand(adj, -1)


def test_square_with_centre():
    pts = np.array([(0, 0), (10, 0), (10, 10), (0, 10), (5, 5)], float)
    adj = delaunay_adjacency(pts)
    assert adj[4].all() and adj[:, 4].all()
    assert not adj[0, 2] and not adj[1, 3]  # opposite corners only meet through the centre
    assert expand(adj, 2).all()


@pytest.mark.parametrize('m, cols', [(1, [0]), (2, [0, 1]), (3, [0, 1])])
def test_official_degenerate_case(m, cols):
    adj = delaunay_adjacency(np.random.default_rng(0).random((m, 2)))
    expected = np.zeros((m, m), bool)
    expected[:, cols] = True
    np.testing.assert_array_equal(adj, expected)
    np.testing.assert_array_equal(expand(adj, 3), expected)
    assert delaunay_adjacency(np.zeros((0, 2))).shape == (0, 0)


def test_collinear_centroids_give_the_path_along_the_line():
    order = np.array([3, 0, 4, 1, 2])
    pts = np.stack([order * 2.0 + 1, order * 1.0], axis=1)  # on y = (x - 1) / 2, shuffled
    adj = delaunay_adjacency(pts)
    pos = {int(o): i for i, o in enumerate(order)}  # line position -> row
    expected = np.eye(5, dtype=bool)
    for a in range(4):
        expected[pos[a], pos[a + 1]] = expected[pos[a + 1], pos[a]] = True
    np.testing.assert_array_equal(adj, expected)


def test_duplicate_centroids_are_linked():
    pts = np.array([(0, 0), (10, 0), (10, 10), (0, 10), (5, 5), (5, 5)], float)
    adj = delaunay_adjacency(pts)
    assert adj[4, 5] and adj[5, 4]
    np.testing.assert_array_equal(adj, adj.T)
    assert np.diag(adj).all()
    assert expand(adj, 2).all()


def test_centroids_and_supersegment_masks():
    labels = np.zeros((10, 12), int)
    labels[:, 4:8] = 1
    labels[:, 8:] = 2
    labels[5:, 8:] = 3
    masks = masks_from_labels(labels)
    cents = segment_centroids(masks)
    np.testing.assert_allclose(cents[0], (1.5, 4.5))
    np.testing.assert_allclose(cents[3], (9.5, 7.0))
    grow = supersegment_masks(masks, order=3)
    assert grow.shape == (4, 4) and np.diag(grow).all()


def test_patch_membership_any_pixel_rule():
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 17, 3] = True          # one pixel -> patch (1, 0)
    masks[1, 15:17, 15:17] = True   # 2x2 pixels straddling all four patches
    s = patch_membership(masks, (32, 32), 16, (2, 2))
    assert s.tolist() == [[False, False, True, False], [True, True, True, True], [False] * 4]


def test_patch_membership_from_lower_resolution_masks():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 8, 8] = True   # -> image pixels 16..17 -> patch (1, 1)
    masks[1, 7, 0] = True   # -> image rows 14..15, cols 0..1 -> patch (0, 0)
    s = patch_membership(masks, (32, 32), 16, (2, 2))
    assert s.tolist() == [[False, False, False, True], [True, False, False, False]]
    # grids that do not divide the image: last partial patch gets the border pixels
    big = np.ones((1, 40, 40), bool)
    assert patch_membership(big, (40, 40), 16, (3, 3)).all()


def blocks_image(seed, size=(120, 160)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    import cv2
    return cv2.resize(small, size[::-1], interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize('cls', [SlicSegmenter, GraphSegmenter])
def test_classical_segmenters_partition_the_image(cls):
    masks = cls(target=24).segment(blocks_image(1))
    assert masks.dtype == bool and masks.shape[1:] == (120, 160)
    assert 4 <= len(masks) <= 60
    np.testing.assert_array_equal(masks.sum(0), 1)

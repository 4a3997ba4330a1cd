"""SuperSegments: each image segment grown by its k-hop neighbours on a Delaunay graph.

Following Revisit Anything (SegVLAD): segment centroids (mean x, y of the mask pixels) are
triangulated with ``scipy.spatial.Delaunay``; the adjacency A (M x M, boolean) links the segments
that share a triangle edge and every segment to itself. The order-k SuperSegment of segment i is
row i of the boolean matrix power A^k: the segment and all segments within k hops. Order 0 means
no expansion (the identity).

Degenerate inputs:

* <= 3 segments: as in the official code every row of A is set to columns {0, 1} ({0} for a single
  segment) -- so with 3 segments segment 2 is in no SuperSegment, not even its own. Kept for
  fidelity; with classical over-segmentation this case only arises on near-blank images.
* Collinear centroids (Qhull cannot triangulate, ``QhullError``; not handled officially): the
  Delaunay graph of points on a line is the path through them in order along the line, so the
  segments are sorted by their projection on the centroids' principal direction and consecutive
  ones are linked.
* Duplicate centroids (Qhull leaves them out of the triangulation as "coplanar" points): each is
  linked to the vertex Qhull reports as nearest, so it inherits that vertex's neighbourhood.
"""
from __future__ import annotations

import numpy as np

DEFAULT_ORDER = 3


def segment_centroids(masks: np.ndarray) -> np.ndarray:
    """(M, 2) float64 (x, y) centroids of (M, H, W) boolean masks; an empty mask gets the image centre."""
    masks = np.asarray(masks, dtype=bool)
    m, h, w = masks.shape
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    ys = np.arange(h, dtype=np.float64)
    xs = np.arange(w, dtype=np.float64)
    sum_y = masks.sum(axis=2) @ ys
    sum_x = masks.sum(axis=1) @ xs
    safe = np.maximum(area, 1.0)
    cx = np.where(area > 0, sum_x / safe, (w - 1) / 2.0)
    cy = np.where(area > 0, sum_y / safe, (h - 1) / 2.0)
    return np.stack([cx, cy], axis=1)


def _path_adjacency(points: np.ndarray) -> np.ndarray:
    """Adjacency of the path through ``points`` sorted along their principal direction."""
    m = len(points)
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    order = np.argsort(centred @ vt[0], kind='stable')
    adj = np.eye(m, dtype=bool)
    adj[order[:-1], order[1:]] = True
    adj[order[1:], order[:-1]] = True
    return adj


def delaunay_adjacency(centroids: np.ndarray) -> np.ndarray:
    """(M, M) boolean adjacency of the centroids' Delaunay graph, with self-loops."""
    from scipy.spatial import Delaunay, QhullError

    points = np.asarray(centroids, dtype=np.float64)
    m = len(points)
    if m == 0:
        return np.zeros((0, 0), bool)
    if m <= 3:
        adj = np.zeros((m, m), bool)
        adj[:, :min(m, 2)] = True
        return adj
    try:
        tri = Delaunay(points)
    except QhullError:
        return _path_adjacency(points)
    adj = np.eye(m, dtype=bool)
    indptr, indices = tri.vertex_neighbor_vertices
    for i in range(m):
        adj[i, indices[indptr[i]:indptr[i + 1]]] = True
    for point, _simplex, vertex in np.asarray(tri.coplanar, dtype=np.int64).reshape(-1, 3):
        adj[point, vertex] = adj[vertex, point] = True
    return adj


def expand(adjacency: np.ndarray, order: int = DEFAULT_ORDER) -> np.ndarray:
    """Boolean ``A^order`` (row i: the segments within ``order`` hops of segment i)."""
    if order < 0:
        raise ValueError(f'SuperSegment order must be >= 0, got {order}')
    adj = np.asarray(adjacency, dtype=bool)
    out = np.eye(len(adj), dtype=bool)
    step = adj.astype(np.float32)
    for _ in range(order):
        out = (out.astype(np.float32) @ step) > 0
    return out


def _cell_map(src: int, dst: int, stride: int, cells: int) -> np.ndarray:
    """(src, cells) boolean: which grid cells the pixels of row/column ``src`` reach after a nearest
    resize from ``src`` to ``dst`` pixels and binning into ``cells`` cells of ``stride`` pixels."""
    dst_px = np.arange(dst)
    source = np.minimum(dst_px * src // dst, src - 1)
    cell = np.minimum(dst_px // stride, cells - 1)
    out = np.zeros((src, cells), bool)
    out[source, cell] = True
    return out


def patch_membership(masks: np.ndarray, image_size: tuple[int, int], stride: int,
                     grid: tuple[int, int]) -> np.ndarray:
    """(M, rows*cols) boolean matrix S: S[m, t] when any pixel of mask m falls in feature patch t.

    ``masks`` (M, h, w) are at the segmentation resolution; as in SegVLAD they are resized (nearest)
    to the backbone input ``image_size`` (H, W) and pixel (i, j) belongs to patch
    (min(i // stride, rows - 1), min(j // stride, cols - 1)). Computed without the resize, as
    row-cell map^T @ mask @ column-cell map for all masks at once (two plain matrix products).
    """
    masks = np.asarray(masks, dtype=bool)
    m, h, w = masks.shape
    rows = _cell_map(h, int(image_size[0]), stride, grid[0]).astype(np.float32)
    cols = _cell_map(w, int(image_size[1]), stride, grid[1]).astype(np.float32)
    per_col = masks.reshape(m * h, w).astype(np.float32) @ cols                   # (M*h, cols)
    per_col = per_col.reshape(m, h, grid[1]).transpose(1, 0, 2).reshape(h, -1)   # (h, M*cols)
    hits = (rows.T @ per_col).reshape(grid[0], m, grid[1]).transpose(1, 0, 2)     # (M, rows, cols)
    return (hits > 0).reshape(m, grid[0] * grid[1])


def supersegment_masks(masks: np.ndarray, order: int = DEFAULT_ORDER) -> np.ndarray:
    """(M, M) boolean: row i marks the segments that make up SuperSegment i."""
    return expand(delaunay_adjacency(segment_centroids(masks)), order)

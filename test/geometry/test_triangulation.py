import numpy as np
import pytest

from test.geometry.scene import CAMERA, descriptors_for, facade_points, observe, pose_at
from vpr_ros.geometry.transforms import CameraMount, pose_to_matrix
from vpr_ros.geometry.triangulation import TriangulationConfig, View, triangulate_anchor, triangulate_dlt


def _street(seed):
    rng = np.random.default_rng(seed)
    points = facade_points(rng)
    return rng, points, descriptors_for(len(points), rng)


def _view(points, desc, pose, rng, noise_px=0.5):
    feats, ids = observe(points, desc, pose, rng, noise_px)
    return View(feats, CAMERA, CameraMount().camera_in_map(pose_to_matrix(pose))), ids


def test_dlt_recovers_exact_points_from_three_views():
    rng = np.random.default_rng(0)
    X = rng.uniform([-3, -3, 5], [3, 3, 20], (50, 3))
    Ps, xs = [], []
    for cx in (-1.0, 0.0, 1.5):
        P = np.hstack([np.eye(3), [[-cx], [0.0], [0.0]]])
        Xc = X @ P[:, :3].T + P[:, 3]
        Ps.append(P)
        xs.append(Xc[:, :2] / Xc[:, 2:])
    np.testing.assert_allclose(triangulate_dlt(Ps, xs), X, atol=1e-9)


def test_anchor_landmarks_are_metric_and_near_the_true_points():
    rng, points, desc = _street(1)
    anchor, anchor_ids = _view(points, desc, pose_at(10.0), rng)
    neighbours = [_view(points, desc, pose_at(x, 0.2), rng)[0] for x in (6.0, 14.0, 2.0, 18.0)]
    lms = triangulate_anchor(anchor, neighbours, TriangulationConfig(), binary=True)
    assert len(lms) > 0.5 * len(anchor_ids)
    truth = points[anchor_ids[lms.keypoint_ids]]
    depth = truth[:, 0] - 10.0
    rel = np.linalg.norm(lms.points - truth, axis=1) / depth
    # the gate keeps points whose predicted depth sigma is <= 5% at 1 px noise; the noise is 0.5 px
    assert np.median(rel) < 0.02
    assert np.percentile(rel, 95) < 0.06
    assert (lms.views >= 2).all()


def test_wrong_matches_are_rejected_by_the_known_epipolar_geometry():
    rng, points, desc = _street(2)
    anchor, anchor_ids = _view(points, desc, pose_at(10.0), rng)
    nb, _ = _view(points, desc, pose_at(14.0), rng)
    # shuffle the positions of a third of the neighbour's keypoints: their matches become outliers
    kp = nb.features.keypoints.copy()
    bad = rng.choice(len(kp), len(kp) // 3, replace=False)
    kp[bad] = kp[rng.permutation(bad)]
    corrupted = View(type(nb.features)(kp, nb.features.descriptors, nb.features.image_size), CAMERA,
                     nb.T_map_optical)
    lms = triangulate_anchor(anchor, [corrupted], TriangulationConfig(), binary=True)
    truth = points[anchor_ids[lms.keypoint_ids]]
    rel = np.linalg.norm(lms.points - truth, axis=1) / (truth[:, 0] - 10.0)
    assert len(lms) > 50
    # a third of the matches were wrong; two-view geometry cannot see an error along the epipolar
    # line, so a few survive (PnP's MAGSAC removes them), but not a third
    assert np.mean(rel > 0.1) < 0.05


def test_no_baseline_gives_no_landmarks():
    rng, points, desc = _street(3)
    anchor, _ = _view(points, desc, pose_at(10.0), rng)
    same, _ = _view(points, desc, pose_at(10.0), rng)
    assert len(triangulate_anchor(anchor, [same], TriangulationConfig(), binary=True)) == 0


@pytest.mark.parametrize('bad', [{'neighbours': 0}, {'ratio': 0.0}, {'max_reprojection_px': 0.0},
                                 {'min_parallax_deg': 95.0}])
def test_config_is_validated(bad):
    from vpr_ros.errors import ConfigError
    with pytest.raises(ConfigError):
        TriangulationConfig(**bad).validate()

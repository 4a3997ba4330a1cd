import numpy as np
import pytest

from test.geometry.scene import CAMERA, SIZE, facade_points, pose_at
from vpr_ros.errors import ConfigError
from vpr_ros.geometry.pnp import PnPConfig, propagate, solve_pnp
from vpr_ros.geometry.transforms import CameraMount, invert, pose_error, pose_to_matrix, rotation_angle_deg

K = CAMERA.matrix_for(SIZE)
MOUNT = CameraMount()


def _project(points, T_map_body):
    T_cam_map = invert(MOUNT.camera_in_map(T_map_body))
    Xc = points @ T_cam_map[:3, :3].T + T_cam_map[:3, 3]
    uv = (Xc / Xc[:, 2:]) @ K.T
    h, w = SIZE
    vis = (Xc[:, 2] > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return points[vis], uv[vis, :2]


def _body(sol):
    return MOUNT.body_in_map(invert(sol.T_cam_world))


def test_recovers_a_known_pose_through_outliers():
    rng = np.random.default_rng(0)
    truth = pose_to_matrix(pose_at(12.0, 1.5, 7.0, 0.3))
    X, uv = _project(facade_points(rng), truth)
    uv = uv + rng.normal(0, 1.0, uv.shape)
    bad = rng.choice(len(uv), int(0.4 * len(uv)), replace=False)
    uv[bad] = rng.uniform([0, 0], [SIZE[1], SIZE[0]], (len(bad), 2))
    sol = solve_pnp(X, uv, K, PnPConfig())
    assert sol is not None
    T = _body(sol)
    assert np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 0.1
    assert rotation_angle_deg(T[:3, :3], truth[:3, :3]) < 0.2
    assert len(set(sol.inliers) & set(bad)) < 0.05 * len(bad)
    assert 0.5 < sol.rms_px < 1.6  # 1 px noise per axis: sqrt(2) px expected


def test_covariance_matches_the_scatter_of_repeated_solves():
    """NEES: for a consistent covariance, e^T Sigma^-1 e of 6-D errors averages 6 (chi-square, 6 dof)."""
    rng = np.random.default_rng(1)
    truth = pose_to_matrix(pose_at(5.0, -1.0, -4.0))
    X_all, uv_true = _project(facade_points(rng, 400), truth)
    nees, errors, sigmas = [], [], []
    for _ in range(150):
        uv = uv_true + rng.normal(0, 1.0, uv_true.shape)
        sol = solve_pnp(X_all, uv, K, PnPConfig(threshold_px=4.0))
        assert sol is not None
        cov = propagate(sol, lambda T: MOUNT.body_in_map(invert(T)))
        e = pose_error(_body(sol), truth)
        nees.append(float(e @ np.linalg.solve(cov, e)))
        errors.append(e)
        sigmas.append(np.sqrt(np.diag(cov)))
    # mean of 150 chi2(6) draws: 6 +- 0.28 (1 sigma); allow for the gating of rare >4 px residuals
    assert 5.0 < np.mean(nees) < 7.2
    np.testing.assert_allclose(np.std(errors, axis=0), np.mean(sigmas, axis=0), rtol=0.25)


def test_too_few_points_or_degenerate_input_gives_none():
    rng = np.random.default_rng(2)
    X, uv = _project(facade_points(rng), pose_to_matrix(pose_at(10.0)))
    assert solve_pnp(X[:10], uv[:10], K, PnPConfig()) is None
    noise = rng.uniform([0, 0], [SIZE[1], SIZE[0]], (200, 2))
    sol = solve_pnp(X[:200], noise, K, PnPConfig())
    assert sol is None or len(sol.inliers) < 20  # random pixels: no pose explains many of them
    same = np.repeat(X[:1], 50, axis=0)
    assert solve_pnp(same, np.repeat(uv[:1], 50, axis=0), K, PnPConfig()) is None


@pytest.mark.parametrize('bad', [{'threshold_px': 0.0}, {'confidence': 1.0}, {'max_iterations': 1},
                                 {'min_inliers': 5}, {'min_inlier_ratio': 1.5},
                                 {'max_position_sigma_m': 0.0}])
def test_config_is_validated(bad):
    with pytest.raises(ConfigError):
        PnPConfig(**bad).validate()

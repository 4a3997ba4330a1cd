import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from test.geometry.scene import pose_at
from vpr_ros.errors import ConfigError
from vpr_ros.geometry.transforms import (
    CameraMount,
    covariance_to_local,
    invert,
    make_transform,
    pose_error,
    pose_to_matrix,
    relative_covariance,
)


def test_pose_transforms_round_trip():
    T = pose_to_matrix(pose_at(3.0, -2.0, 40.0, 1.0))
    np.testing.assert_allclose(invert(invert(T)), T, atol=1e-12)
    mount = CameraMount((0.2, 0.0, 1.1))
    np.testing.assert_allclose(mount.body_in_map(mount.camera_in_map(T)), T, atol=1e-12)
    # the optical z axis is the body x axis, optical x is body -y (REP-103)
    np.testing.assert_allclose(CameraMount().T_body_optical[:3, 2], [1, 0, 0])
    np.testing.assert_allclose(CameraMount().T_body_optical[:3, 0], [0, -1, 0])


def test_camera_mount_parses_tf2_echo_style_text():
    mount = CameraMount.parse('0.1 0 1.2  -0.5 0.5 -0.5 0.5')
    np.testing.assert_allclose(mount.T_body_optical[:3, :3], CameraMount().T_body_optical[:3, :3], atol=1e-12)
    np.testing.assert_allclose(mount.T_body_optical[:3, 3], [0.1, 0.0, 1.2])
    assert CameraMount.parse('') == CameraMount()
    for bad in ('1 2 3', 'a b c d e f g', '0 0 0 0 0 0 0', '0 0 0 0 0 0 nan'):
        with pytest.raises(ConfigError):
            CameraMount.parse(bad)


def _sample(rng, cov, n):
    return rng.multivariate_normal(np.zeros(6), cov, n)


def test_covariance_conversions_match_sampled_perturbations():
    """Perturb a pose in the parent-frame (dp, dtheta) convention, measure the samples in the other
    conventions, and compare their scatter with the converted covariances (entries ~1e-3; the sampling
    error of 20000 draws is ~1.5e-5, a wrong rotation of the blocks is off by ~1e-3)."""
    rng = np.random.default_rng(0)
    T_hat = make_transform(Rotation.from_euler('xyz', [0.3, -0.2, 1.1]).as_matrix(), [4.0, -1.0, 0.5])
    A = rng.normal(size=(6, 6)) * 0.02
    cov = A @ A.T + np.eye(6) * 1e-4
    samples = []
    for e in _sample(rng, cov, 20000):
        R = Rotation.from_rotvec(e[3:]).as_matrix() @ T_hat[:3, :3]
        samples.append(make_transform(R, T_hat[:3, 3] + e[:3]))
    # GTSAM local coordinates: T = T_hat Exp(xi), xi = (omega, v) in body axes
    local = []
    for T in samples:
        D = invert(T_hat) @ T
        local.append(np.concatenate([Rotation.from_matrix(D[:3, :3]).as_rotvec(), D[:3, 3]]))
    np.testing.assert_allclose(np.cov(np.array(local).T), covariance_to_local(cov, T_hat[:3, :3]), atol=6e-5)
    # relative to a reference pose
    T_ref = pose_to_matrix(pose_at(1.0, 2.0, 30.0))
    rel_hat = invert(T_ref) @ T_hat
    rel = [pose_error(invert(T_ref) @ T, rel_hat) for T in samples]
    np.testing.assert_allclose(np.cov(np.array(rel).T), relative_covariance(cov, T_ref[:3, :3]), atol=6e-5)

"""Geometric verification on synthetic data (known homography, known rigid scene) and the sample world."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test.helpers import blob_image
from vpr_ros.errors import ConfigError
from vpr_ros.features import CameraIntrinsics, LocalFeatureConfig, LocalFeatures, extract
from vpr_ros.matching.verification import (
    VerificationConfig,
    Verifier,
    median_parallax_deg,
    mutual_ratio_matches,
    verify_pair,
)

K = (500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0)
CAMERA = CameraIntrinsics(K, (), 'plumb_bob', 640, 480)


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def test_a_homography_warped_image_verifies_and_an_unrelated_one_does_not() -> None:
    import cv2

    img = blob_image(0)
    H = np.array([[0.95, 0.05, 20.0], [-0.04, 1.0, 10.0], [1e-5, 2e-5, 1.0]])
    warped = cv2.warpPerspective(img, H, (640, 480), borderValue=(128, 128, 128))
    cfg = LocalFeatureConfig('rootsift', 500)
    q, p, other = extract(warped, cfg), extract(img, cfg), extract(blob_image(1), cfg)
    assert 200 <= len(q) <= 500 and q.descriptors.dtype == np.uint8
    good = verify_pair(q, p, 0)
    bad = verify_pair(q, other, 1)
    assert good.verified and good.model == 'fundamental' and good.inliers >= 100
    assert not bad.verified and bad.inliers < 15
    ranked = Verifier(lambda pid: [p, other][pid]).verify(q, [1, 0])
    assert [v.place_id for v in ranked] == [0, 1]


def test_orb_features_verify_the_same_pair() -> None:
    import cv2

    img = blob_image(2)
    H = np.array([[1.0, 0.02, -15.0], [0.01, 0.98, 8.0], [0.0, 1e-5, 1.0]])
    warped = cv2.warpPerspective(img, H, (640, 480), borderValue=(128, 128, 128))
    cfg = LocalFeatureConfig('orb', 800)
    q, p, other = extract(warped, cfg), extract(img, cfg), extract(blob_image(3), cfg)
    assert q.descriptors.shape[1] == 32
    assert verify_pair(q, p, 0, binary=True).verified
    assert not verify_pair(q, other, 1, binary=True).verified


def synthetic_pair(R: np.ndarray, t: np.ndarray, n: int = 300, outliers: int = 100, seed: int = 0,
                   noise_px: float = 0.3) -> tuple[LocalFeatures, LocalFeatures]:
    """A rigid 3-D point cloud seen by the query camera and by a place camera: X_place = R X_query + t."""
    rng = np.random.default_rng(seed)
    Kmat = np.asarray(K).reshape(3, 3)
    X = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(4, 15, n)])

    def project(P: np.ndarray) -> np.ndarray:
        uv = (Kmat @ P.T).T
        return uv[:, :2] / uv[:, 2:] + rng.normal(0, noise_px, (len(P), 2))

    desc = rng.integers(0, 256, (n, 128)).astype(np.uint8)
    q_pts, p_pts = project(X), project((R @ X.T).T + t)
    q_desc = np.clip(desc.astype(int) + rng.integers(-3, 4, desc.shape), 0, 255).astype(np.uint8)
    extra_q = rng.uniform([0, 0], [640, 480], (outliers, 2))
    extra_p = rng.uniform([0, 0], [640, 480], (outliers, 2))
    q = LocalFeatures(np.vstack([q_pts, extra_q]).astype(np.float32),
                      np.vstack([q_desc, rng.integers(0, 256, (outliers, 128))]).astype(np.uint8), (480, 640))
    p = LocalFeatures(np.vstack([p_pts, extra_p]).astype(np.float32),
                      np.vstack([desc, rng.integers(0, 256, (outliers, 128))]).astype(np.uint8), (480, 640))
    return q, p


def test_relative_pose_of_a_known_rigid_scene_is_recovered_with_intrinsics() -> None:
    R_true = rot_y(12.0)
    t_true = np.array([1.0, 0.1, 0.3])
    q, p = synthetic_pair(R_true, t_true)
    v = verify_pair(q, p, 7, query_camera=CAMERA, place_camera=CAMERA)
    assert v.verified and v.model == 'essential' and v.inliers >= 250
    angle = math.degrees(math.acos(np.clip((np.trace(v.rotation.T @ R_true) - 1) / 2, -1, 1)))
    assert angle < 1.0
    direction = math.degrees(math.acos(np.clip(v.translation @ (t_true / np.linalg.norm(t_true)), -1, 1)))
    assert direction < 3.0 and np.linalg.norm(v.translation) == pytest.approx(1.0)
    # without intrinsics: the fundamental matrix, no pose
    f = verify_pair(q, p, 7)
    assert f.verified and f.model == 'fundamental' and f.rotation is None


def test_parallax_grows_with_the_baseline_and_ignores_rotation() -> None:
    """The median rotation-compensated parallax: 0 for a pure rotation, larger for a longer baseline."""
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.uniform(-4, 4, 200), rng.uniform(-3, 3, 200), rng.uniform(6, 20, 200)])

    def parallax(R: np.ndarray, t: np.ndarray) -> float:
        Xp = (R @ X.T).T + t
        return median_parallax_deg(X[:, :2] / X[:, 2:], Xp[:, :2] / Xp[:, 2:], R)

    assert parallax(rot_y(15.0), np.zeros(3)) == pytest.approx(0.0, abs=1e-6)
    short = parallax(rot_y(5.0), np.array([0.2, 0.0, -1.0]))
    long = parallax(rot_y(5.0), np.array([0.8, 0.0, -4.0]))
    assert 0.5 < short < long
    q, p = synthetic_pair(rot_y(12.0), np.array([1.0, 0.1, 0.3]))
    v = verify_pair(q, p, 7, query_camera=CAMERA, place_camera=CAMERA)
    assert v.parallax_deg is not None and v.parallax_deg > 1.0
    assert verify_pair(q, p, 7).parallax_deg is None  # fundamental matrix: no rotation to remove


def test_essential_matrix_rejects_random_correspondences() -> None:
    rng = np.random.default_rng(5)
    desc = rng.integers(0, 256, (300, 128)).astype(np.uint8)
    q = LocalFeatures(rng.uniform([0, 0], [640, 480], (300, 2)).astype(np.float32), desc, (480, 640))
    p = LocalFeatures(rng.uniform([0, 0], [640, 480], (300, 2)).astype(np.float32), desc.copy(), (480, 640))
    assert len(mutual_ratio_matches(q.descriptors, p.descriptors, 0.8, False)) == 300
    v = verify_pair(q, p, 0, query_camera=CAMERA, place_camera=CAMERA)
    assert not v.verified and v.rotation is None


def test_intrinsics_scale_with_the_image_and_config_is_validated() -> None:
    assert CAMERA.matrix_for((240, 320))[0, 0] == pytest.approx(250.0)
    centre = CAMERA.normalise(np.array([[320.0, 240.0]]), (480, 640))
    assert np.abs(centre).max() < 1e-9
    with pytest.raises(ConfigError):
        VerificationConfig(min_inliers=3).validate()
    with pytest.raises(ConfigError):
        LocalFeatureConfig('surf').validate()
    with pytest.raises(ConfigError):
        CameraIntrinsics((0.0,) * 9).check()


def test_empty_and_featureless_images_are_not_verified() -> None:
    flat = extract(np.full((120, 160, 3), 90, np.uint8))
    assert len(flat) == 0 and flat.descriptors.shape == (0, 128)
    v = verify_pair(flat, extract(blob_image(0)), 0)
    assert not v.verified and v.matches == 0
    assert Verifier(lambda pid: None).verify(flat, [3])[0].verified is False


@pytest.fixture(scope='module')
def sample_frames():
    from vpr_ros.sample import render_traversal

    mapping, _ = render_traversal('mapping', scale=0.15)
    query, _ = render_traversal('query', scale=0.15)
    return mapping, query


def test_sample_world_revisit_verifies_and_a_distant_place_does_not(sample_frames) -> None:
    mapping, query = sample_frames
    pos = np.array([f.pose.position[:2] for f in mapping])
    cfg = LocalFeatureConfig()
    map_feats = [extract(f.rgb, cfg) for f in mapping]
    verified_same, verified_far, checked = 0, 0, 0
    for frame in query[::4]:
        d = np.linalg.norm(pos - np.asarray(frame.pose.position[:2]), axis=1)
        near, far = int(np.argmin(d)), int(np.argmax(d))
        if d[near] > 3.0:
            continue
        checked += 1
        qf = extract(frame.rgb, cfg)
        verified_same += verify_pair(qf, map_feats[near], near).verified
        verified_far += verify_pair(qf, map_feats[far], far).verified
    assert checked >= 5
    assert verified_far == 0
    assert verified_same >= checked // 2, (verified_same, checked)


def test_an_estimator_assertion_is_an_unverified_candidate(monkeypatch) -> None:
    """OpenCV's USAC can assert ('!model.empty()') on degenerate match sets; that must not escape."""
    import cv2

    img = blob_image(0)
    cfg = LocalFeatureConfig('rootsift', 500)
    q, p = extract(img, cfg), extract(img.copy(), cfg)

    def fails(*args, **kwargs):
        raise cv2.error('(-215:Assertion failed) !model.empty() in function setModelParameters')

    monkeypatch.setattr(cv2, 'findFundamentalMat', fails)
    monkeypatch.setattr(cv2, 'findEssentialMat', fails)
    for camera in (None, CAMERA):
        v = verify_pair(q, p, 7, VerificationConfig(), camera, camera)
        assert not v.verified and v.inliers == 0 and v.matches >= 20


def test_a_frame_verifier_verifies_each_candidate_once_and_times_it_once() -> None:
    from types import SimpleNamespace

    q, p = synthetic_pair(rot_y(5.0), np.array([0.5, 0.0, 0.2]))
    fetched, timed = [], []
    verifier = Verifier(lambda pid: fetched.append(pid) or (None if pid == 9 else p))
    verify = verifier.for_frame(lambda: q, None, timed.append)
    first = verify([SimpleNamespace(place_id=3), SimpleNamespace(place_id=9)])
    again = verify([SimpleNamespace(place_id=3)], top_k=1)
    assert first[0].verified and again[0] is first[0]
    assert fetched == [3, 9] and len(timed) == 1 and timed[0] == first[0].ms  # 9 has no features: not timed

import numpy as np
import pytest

from test.geometry.scene import CAMERA, descriptors_for, facade_points, observe, pose_at
from vpr_ros.errors import ConfigError
from vpr_ros.geometry.metric import METRIC, MetricConfig, MetricLocalizer
from vpr_ros.geometry.pnp import PnPConfig
from vpr_ros.geometry.transforms import CameraMount, invert, pose_to_matrix, rotation_angle_deg

SPACING_M = 4.0


def _map(rng, n_places=12, drop_pose=None):
    points = facade_points(rng)
    desc = descriptors_for(len(points), rng)
    poses = [pose_at(i * SPACING_M, 0.0, float(rng.uniform(-2, 2))) for i in range(n_places)]
    feats = [observe(points, desc, p, rng)[0] for p in poses]
    if drop_pose is not None:
        poses[drop_pose] = None
    stamps = np.arange(n_places, dtype=np.float64) * 0.5
    return points, desc, poses, feats, stamps


def _localizer(poses, feats, stamps, camera=CAMERA, **config):
    return MetricLocalizer(lambda pid: feats[pid], lambda pid: poses[pid], lambda: stamps, camera, True,
                           MetricConfig(**config))


def test_query_between_keyframes_gets_a_metric_pose():
    rng = np.random.default_rng(0)
    points, desc, poses, feats, stamps = _map(rng)
    truth = pose_at(21.3, 1.8, 6.0)   # between places 5 and 6, another lane, yawed
    query, _ = observe(points, desc, truth, rng, noise_px=1.0)
    loc = _localizer(poses, feats, stamps)
    result = loc.localize(query, [5, 6], CAMERA)
    assert result.status == METRIC and result.place_id == 5
    T = result.T_map_body
    T_true = pose_to_matrix(truth)
    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.3
    assert rotation_angle_deg(T[:3, :3], T_true[:3, :3]) < 1.0
    sigmas = np.sqrt(np.diag(result.covariance))
    assert (sigmas[:3] < 0.5).all() and (sigmas[3:] < np.radians(1.0)).all()
    assert result.inliers >= 20 and result.pose is not None
    # the constraint is the query camera in the place camera, metric
    R, t, cov = result.constraint()
    mount = CameraMount()
    T_rel = invert(mount.camera_in_map(pose_to_matrix(poses[5]))) @ mount.camera_in_map(T_true)
    assert np.linalg.norm(t - T_rel[:3, 3]) < 0.3
    assert rotation_angle_deg(R, T_rel[:3, :3]) < 1.0
    assert np.linalg.norm(t) > 1.0 and cov.shape == (6, 6) and np.all(np.linalg.eigvalsh(cov) > 0)
    # landmarks are cached per place
    assert loc.cached_bytes > 0
    assert loc.landmarks(5, CAMERA) is loc.landmarks(5, CAMERA)


def test_a_candidate_that_cannot_be_solved_falls_through_to_the_next():
    rng = np.random.default_rng(1)
    points, desc, poses, feats, stamps = _map(rng, drop_pose=0)
    truth = pose_at(30.5, 1.0, -3.0)
    query, _ = observe(points, desc, truth, rng)
    result = _localizer(poses, feats, stamps).localize(query, [0, 8], CAMERA)
    assert result.status == METRIC and result.place_id == 8
    assert np.linalg.norm(result.T_map_body[:3, 3] - pose_to_matrix(truth)[:3, 3]) < 0.3


def test_a_request_matches_the_query_to_each_anchor_once(monkeypatch):
    from vpr_ros.matching import descriptor_matching

    rng = np.random.default_rng(1)
    points, desc, poses, feats, stamps = _map(rng, drop_pose=0)
    query, _ = observe(points, desc, pose_at(30.5, 1.0, -3.0), rng)
    # no solve is good enough, so every candidate is tried
    loc = _localizer(poses, feats, stamps, pnp=PnPConfig(min_inliers=10_000))
    loc.precompute()
    calls: list[int] = []
    real = descriptor_matching.mutual_ratio_matches

    def counted(a, b, ratio, binary):
        calls.append(next(i for i, f in enumerate(feats) if f.descriptors is b))
        return real(a, b, ratio, binary)

    monkeypatch.setattr(descriptor_matching, 'mutual_ratio_matches', counted)
    # candidates 7 and 8 share four of their five anchors (6..9); place 0 has no pose
    result = loc.localize(query, [0, 7, 8], CAMERA)
    assert result.status != METRIC
    assert sorted(calls) == [5, 6, 7, 8, 9, 10]


def test_precompute_triangulates_every_place_up_to_the_cache_bound():
    rng = np.random.default_rng(2)
    points, desc, poses, feats, stamps = _map(rng)
    loc = _localizer(poses, feats, stamps)
    assert loc.precompute() == len(poses) == loc.cached_places
    cached = loc.landmarks(5, CAMERA)
    loc.precompute()
    assert loc.landmarks(5, CAMERA) is cached and len(cached) > 0  # nothing recomputed
    small = _localizer(poses, feats, stamps, cache_places=4)
    assert small.precompute() == 4 == small.cached_places
    assert _localizer(poses, feats, stamps, camera=None).precompute() == 0  # no intrinsics: nothing to do
    assert _localizer(poses, feats, stamps).precompute([3, 4]) == 2


def test_without_intrinsics_or_pose_or_matches_the_status_says_why():
    rng = np.random.default_rng(2)
    points, desc, poses, feats, stamps = _map(rng, drop_pose=4)
    query, _ = observe(points, desc, pose_at(16.5, 1.0), rng)
    assert _localizer(poses, feats, stamps, camera=None).localize(query, [4], None).status == 'no_intrinsics'
    assert _localizer(poses, feats, stamps).localize(query, [4], CAMERA).status == 'no_place_pose'
    stranger = type(query)(query.keypoints, descriptors_for(len(query), rng), query.image_size)
    result = _localizer(poses, feats, stamps).localize(stranger, [5], CAMERA)
    assert result.status == 'few_matches' and result.T_map_body is None
    with pytest.raises(ValueError, match='few_matches'):
        result.constraint()
    # the map camera stands in for an unknown query camera (the convention of verification)
    assert _localizer(poses, feats, stamps).localize(query, [5], None).status == METRIC


def test_an_isolated_place_has_no_landmarks():
    rng = np.random.default_rng(3)
    points, desc, poses, feats, stamps = _map(rng, n_places=1)
    query, _ = observe(points, desc, pose_at(1.0, 1.0), rng)
    assert _localizer(poses, feats, stamps).localize(query, [0], CAMERA).status == 'few_landmarks'


def test_config_is_validated():
    with pytest.raises(ConfigError):
        MetricConfig(candidates=0).validate()


def test_landmarks_are_recomputed_when_a_grown_map_gives_the_place_a_new_neighbour():
    rng = np.random.default_rng(4)
    points, desc, poses, feats, stamps = _map(rng, n_places=4)
    loc = _localizer(poses, feats, stamps)
    before = loc.landmarks(3, CAMERA)  # the newest place: neighbours on one side only
    poses.append(pose_at(4 * SPACING_M, 0.0, 0.0))  # the map grows by one keyframe
    feats.append(observe(points, desc, poses[-1], rng)[0])
    grown = np.append(stamps, 2.0)
    loc._stamps = lambda: grown
    after = loc.landmarks(3, CAMERA)
    assert after is not before and len(after) > len(before)


def test_a_position_only_place_pose_is_no_pose_for_the_solve():
    from vpr_ros.frames import Pose

    rng = np.random.default_rng(5)
    points, desc, poses, feats, stamps = _map(rng)
    poses[4] = Pose(poses[4].position, None)
    query, _ = observe(points, desc, pose_at(16.5, 1.0), rng)
    assert _localizer(poses, feats, stamps).localize(query, [4], CAMERA).status == 'no_place_pose'


def test_body_constraint_is_the_query_body_in_the_place_body_with_a_body_frame_covariance():
    rng = np.random.default_rng(6)
    points, desc, poses, feats, stamps = _map(rng)
    truth = pose_at(21.3, 1.8, 6.0)
    query, _ = observe(points, desc, truth, rng, noise_px=1.0)
    result = _localizer(poses, feats, stamps).localize(query, [5], CAMERA)
    assert result.good
    T_place = pose_to_matrix(poses[result.place_id])
    R, t, cov = result.body_constraint(T_place)
    T_true = invert(T_place) @ pose_to_matrix(truth)
    assert np.linalg.norm(t - T_true[:3, 3]) < 0.3 and rotation_angle_deg(R, T_true[:3, :3]) < 1.0
    # rotating the covariance into the query body keeps its eigenvalues (a change of axes)
    np.testing.assert_allclose(np.linalg.eigvalsh(cov), np.linalg.eigvalsh(result.covariance), rtol=1e-9)
    # the yawed query's forward axis: the body-frame x variance is the map-frame variance along it
    fwd = result.T_map_body[:3, 0]
    assert cov[0, 0] == pytest.approx(fwd @ result.covariance[:3, :3] @ fwd, rel=1e-9)

"""The procedurally rendered sample world: determinism, bags, and the traversals' properties."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vpr_ros import sample
from vpr_ros.errors import ConfigError, SourceError
from vpr_ros.sample import SampleInfo, generate_sample, render_traversal
from vpr_ros.sources.bag import BagSource

SCALE = 0.1
SIZE = (48, 64)


def _xy(frames) -> np.ndarray:
    return np.array([f.pose.position[:2] for f in frames])


def _yaw_diff(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


@pytest.fixture(scope='module')
def traversals():
    return {name: render_traversal(name, seed=3, image_size=SIZE, scale=SCALE) for name in sample.TRAVERSALS}


@pytest.fixture(scope='module')
def sqlite_sample(tmp_path_factory) -> SampleInfo:
    out = tmp_path_factory.mktemp('sample')
    return generate_sample(str(out), seed=3, image_size=SIZE, scale=SCALE, progress=False)


def test_deterministic_for_a_seed(traversals):
    sample._world.cache_clear()  # rebuild the world too, not only the frames
    frames, odom = render_traversal('query', seed=3, image_size=SIZE, scale=SCALE)
    ref_frames, ref_odom = traversals['query']
    assert len(frames) == len(ref_frames) and len(odom) == len(ref_odom)
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(frames, ref_frames))
    assert [(f.stamp, f.pose) for f in frames] == [(f.stamp, f.pose) for f in ref_frames]
    assert odom == ref_odom
    other, _ = render_traversal('query', seed=4, image_size=SIZE, scale=SCALE)
    assert not np.array_equal(other[0].rgb, frames[0].rgb)


def test_frames_and_odometry(traversals):
    for name, (frames, odom) in traversals.items():
        assert frames[0].rgb.shape == (*SIZE, 3) and frames[0].rgb.dtype == np.uint8
        stamps = np.array([f.stamp for f in frames])
        odom_stamps = np.array([t for t, _ in odom])
        assert np.all(np.diff(stamps) > 0) and np.all(np.diff(odom_stamps) > 0)
        # odometry is faster than the camera and not aligned with it: poses must be interpolated
        assert len(odom) > 4 * len(frames)
        assert odom_stamps[0] < stamps[0] and odom_stamps[-1] > stamps[-1]
        assert np.min(np.abs(stamps[:, None] - odom_stamps[None, :])) > 1e-3
        spacing = np.linalg.norm(np.diff(_xy(frames), axis=0), axis=1)
        assert 2.0 < float(np.median(spacing)) < 6.0, name
    starts = {name: frames[0].stamp for name, (frames, _) in traversals.items()}
    assert len(set(round(t) for t in starts.values())) == 3


@pytest.mark.parametrize('storage,compressed', [('mcap', True)])
def test_bags_readable_with_covered_poses(sqlite_sample, tmp_path, traversals, storage, compressed):
    mcap = generate_sample(str(tmp_path / 'out'), seed=3, storage=storage, compressed=compressed,
                           image_size=SIZE, traversals=('mapping',), scale=SCALE, progress=False)
    assert set(mcap.bags) == {'mapping'} and mcap.storage == storage
    for info in (sqlite_sample, mcap):
        assert info.route_length_m == pytest.approx(max(sample.MIN_LOOP_M, sample.LOOP_M * SCALE), rel=0.01)
        for name, path in info.bags.items():
            src = BagSource(path)
            assert src.image_topic == '/camera/image_raw' and src.pose_topic == '/odom'
            assert len(src.pose_track()) > 4 * src.image_count
            frames = list(src.frames())
            assert len(frames) == info.frames[name] == len(traversals[name][0])
            assert src.skips.total == 0
            ref = traversals[name][0]
            err = np.linalg.norm(_xy(frames) - _xy(ref), axis=1)
            assert float(err.max()) < 0.05  # interpolated odometry vs ground truth
            assert max(_yaw_diff(a.pose.yaw, b.pose.yaw) for a, b in zip(frames, ref)) < math.radians(1)
            if not compressed:
                assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(frames, ref))


def test_refuses_to_overwrite(sqlite_sample):
    with pytest.raises(SourceError, match='refusing to overwrite'):
        generate_sample(sqlite_sample.out_dir, seed=3, image_size=SIZE, scale=SCALE,
                        traversals=('viewpoint',), progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match='unknown sample traversal'):
        render_traversal('night', scale=SCALE)
    with pytest.raises(SourceError, match='storage'):
        generate_sample(str(tmp_path), storage='rosbag1', scale=SCALE, progress=False)


def test_mapping_contains_a_revisit(traversals):
    frames, _ = traversals['mapping']
    xy, stamps = _xy(frames), np.array([f.stamp for f in frames])
    close = np.linalg.norm(xy[:, None] - xy[None], axis=2) < 10.0
    apart = np.abs(stamps[:, None] - stamps[None]) > 30.0
    assert (close & apart).any()


def test_query_same_places_other_conditions(traversals):
    mapping, query = traversals['mapping'][0], traversals['query'][0]
    mxy = _xy(mapping)
    pairs = []
    for q in query:
        d = np.linalg.norm(mxy - q.pose.position[:2], axis=1)
        i = int(d.argmin())
        assert d[i] < 5.0  # the same route, another lane
        pairs.append((mapping[i], q, d[i]))
    offsets = np.array([d for _, _, d in pairs])
    assert float(np.median(offsets)) > 0.8
    yaw = np.array([_yaw_diff(m.pose.yaw, q.pose.yaw) for m, q, _ in pairs])
    assert float(np.degrees(yaw).max()) < 20.0
    diff = np.mean([np.abs(m.rgb.astype(float) - q.rgb.astype(float)).mean() for m, q, _ in pairs])
    assert diff > 20.0
    m_brightness = np.mean([m.rgb.mean() for m, _, _ in pairs])
    q_brightness = np.mean([q.rgb.mean() for _, q, _ in pairs])
    assert q_brightness < m_brightness - 10  # an evening in autumn
    stamps, qxy = np.array([f.stamp for f in query]), _xy(query)
    close = np.linalg.norm(qxy[:, None] - qxy[None], axis=2) < 10.0
    assert (close & (np.abs(stamps[:, None] - stamps[None]) > 30.0)).any()


def test_viewpoint_is_offset_and_yawed(traversals):
    mapping, view = traversals['mapping'][0], traversals['viewpoint'][0]
    mxy = _xy(mapping)
    yaws, offsets = [], []
    for v in view:
        d = np.linalg.norm(mxy - v.pose.position[:2], axis=1)
        i = int(d.argmin())
        offsets.append(d[i])
        yaws.append(math.degrees((v.pose.yaw - mapping[i].pose.yaw + math.pi) % (2 * math.pi) - math.pi))
    assert 25.0 <= float(np.median(yaws)) <= 40.0
    assert 4.0 <= float(np.median(offsets)) <= 8.0

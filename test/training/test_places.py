"""Places from poses, separated batches, held-out stretches, session alignment checks."""
import numpy as np
import pytest

from vpr_ros.errors import SourceError
from vpr_ros.training.places import (
    FrameTable,
    check_alignment,
    epoch_batches,
    make_places,
    path_stretch,
    recall_at,
    region_masks,
    sample_members,
    validation_split,
)


def _loop(n=200, radius=60.0, session=0, t0=0.0, laps=1.0, offset=0.0):
    a = np.linspace(0, 2 * np.pi * laps, n, endpoint=False)
    xyz = np.stack([(radius + offset) * np.cos(a), (radius + offset) * np.sin(a), np.zeros(n)], axis=1)
    yaw = a + np.pi / 2
    return FrameTable(xyz, yaw, t0 + np.arange(n, dtype=float), np.full(n, session))


def _cat(*tables):
    fields = ('xyz', 'yaw', 'stamp', 'session')
    return FrameTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in fields))


def test_members_are_positives_and_batches_negatives():
    table = _cat(_loop(), _loop(session=1, t0=1000, offset=2.0))
    places = make_places(table, np.ones(len(table), bool), pos_dist=10.0, pos_yaw=45.0)
    assert len(places.members) > 20
    for m in places.members:
        d = np.linalg.norm(table.xyz[m, None, :2] - table.xyz[None, m, :2], axis=2)
        assert d.max() <= 10.0 + 1e-9
    rng = np.random.default_rng(0)
    batches = epoch_batches(places, 8, separation=35.0, rng=rng)
    assert batches and all(2 <= len(b) <= 8 for b in batches)
    for b in batches:
        frames, copies, labels = sample_members(places, b, 4, 2, rng)
        assert len(frames) == 4 * len(b) and copies.max() < 2
        xy = table.xyz[frames, :2]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
        other = labels[:, None] != labels[None]
        assert (d[other] > 25.0).all()  # every cross-place pair is beyond neg_dist


def test_heading_splits_places():
    fwd = _loop()
    back = FrameTable(fwd.xyz.copy(), fwd.yaw + np.pi, fwd.stamp + 1000, np.ones(len(fwd), int))
    places = make_places(_cat(fwd, back), np.ones(400, bool), 10.0, 45.0)
    for m in places.members:
        assert len(set((m >= 200).tolist())) == 1  # never mixes opposite headings


def test_held_out_stretch_and_buffer():
    table = _cat(_loop(), _loop(session=1, t0=1000, offset=1.0))
    anchors = path_stretch(table, (0.8, 1.0))
    assert set(table.session[anchors]) == {0} and 30 <= len(anchors) <= 45
    inside, far = region_masks(table, anchors, 10.0, 25.0)
    assert inside.sum() > len(anchors)  # the other session's frames there too
    assert not (inside & far).any()
    db, q, how = validation_split(table, inside, 30.0, 10.0)
    assert set(table.session[db]) == {0} and set(table.session[q]) == {1} and 'first session' in how


def test_single_session_validation_uses_revisits():
    table = _loop(n=240, laps=1.2)
    inside, _ = region_masks(table, path_stretch(table, (0.85, 1.0)), 10.0, 25.0)
    db, q, how = validation_split(table, inside, 30.0, 10.0)
    assert len(db) and len(q) and 'revisits' in how
    assert table.stamp[q].min() > table.stamp[db].max() - 1e-9 or len(set(db) & set(q)) == 0


def test_alignment_refuses_other_frames_and_disjoint_sessions():
    a, b = _loop(), _loop(session=1, t0=1000)
    both = _cat(a, b)
    assert check_alignment(both, ['map', 'map'], ['a', 'b'], 25.0, 0.2) == {'a': 1.0, 'b': 1.0}
    with pytest.raises(SourceError, match='different frames'):
        check_alignment(both, ['map', 'odom'], ['a', 'b'], 25.0, 0.2)
    far = FrameTable(b.xyz + np.array([500.0, 0, 0]), b.yaw, b.stamp, b.session)
    with pytest.raises(SourceError, match='not aligned'):
        check_alignment(_cat(a, far), [None, None], ['a', 'b'], 25.0, 0.2)


def test_recall_at():
    db = np.eye(3, dtype=np.float32)
    q = np.array([[1, 0, 0], [0, 0.1, 1]], np.float32)
    xyz_db = np.array([[0, 0, 0], [100, 0, 0], [200, 0, 0]], float)
    xyz_q = np.array([[1, 0, 0], [101, 0, 0]], float)
    r = recall_at(db, q, xyz_db, xyz_q, 25.0, ns=(1, 2))
    assert r == {'R@1': 0.5, 'R@2': 1.0}

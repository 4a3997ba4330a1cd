"""Sequence matching through the Localizer on a small rendering of the sample world."""
from __future__ import annotations

import numpy as np
import pytest

from test.helpers import assert_same_ranking
from vpr_ros.encoders import create_encoder
from vpr_ros.evaluation.metrics import Thresholds, evaluate_retrieval
from vpr_ros.localization import IdentityOnly, Localizer
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching.sequence import SequenceConfig, sequence_match
from vpr_ros.pipeline import run_queries
from vpr_ros.sample import render_traversal

SCALE = 0.15
SIZE = (48, 64)
LENGTH = 10  # SeqSLAM's ds


@pytest.fixture(scope='module')
def world():
    mapping, _ = render_traversal('mapping', seed=0, image_size=SIZE, scale=SCALE)
    query, _ = render_traversal('query', seed=0, image_size=SIZE, scale=SCALE)
    encoder = create_encoder('raw_pixels', {})
    vmap = VprMap.empty(encoder.identity())
    for frame, vectors in zip(mapping, encoder.describe([f.rgb for f in mapping])):
        vmap.add(frame.stamp, frame.pose, vectors)
    return vmap, encoder, query


def _recall_at_1(records, vmap) -> float:
    return evaluate_retrieval(records, vmap.places, Thresholds(10.0), ns=[1])['recall']['R@1']


def test_localizer_sequences_beat_single_frames_and_say_which_answered(world) -> None:
    vmap, encoder, query = world
    single = run_queries(Localizer(vmap, encoder, top_k=3), query, progress=False)
    seq_loc = Localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=LENGTH, spacing='frames'))
    seq = run_queries(seq_loc, query, progress=False)
    by = [r.extra['matched_by'] for r in seq]
    assert by[:LENGTH - 1] == ['single_frame'] * (LENGTH - 1) and set(by[LENGTH - 1:]) == {'sequence'}
    assert [r.extra['sequence_history'] for r in seq[:LENGTH + 1]] == [*range(1, LENGTH + 1), LENGTH]
    for s, r in zip(single[:LENGTH - 1], seq):  # short history: exactly the single-frame answer
        assert s.place_ids == r.place_ids
    assert [r.extra['single_frame_place_ids'] for r in seq] == [s.place_ids for s in single]
    r_single, r_seq = _recall_at_1(single, vmap), _recall_at_1(seq, vmap)
    assert r_seq >= r_single + 0.05, (r_single, r_seq)


def test_with_poses_the_localizer_spaces_sequences_by_distance_and_beats_single_frames(world) -> None:
    """Query frames with poses (their odometry) on a posed map: distance-spaced sequences, answered
    single-frame only until the travelled distance covers the sequence; as good as frame spacing at
    the mapping speed, and the same answers as the offline function."""
    vmap, encoder, query = world
    single = run_queries(Localizer(vmap, encoder, top_k=3), query, progress=False)
    cfg = SequenceConfig(length=LENGTH)
    seq = run_queries(Localizer(vmap, encoder, top_k=3, sequence=cfg), query, progress=False)
    by = [r.extra['matched_by'] for r in seq]
    first = by.index('sequence')
    assert 0 < first < 2 * LENGTH and set(by[first:]) == {'sequence'}
    assert {r.extra['sequence_spacing'] for r in seq[first:]} == {'distance'}
    assert _recall_at_1(seq, vmap) >= _recall_at_1(single, vmap) + 0.05
    by_frames = SequenceConfig(length=LENGTH, spacing='frames')
    frames = run_queries(Localizer(vmap, encoder, top_k=3, sequence=by_frames), query, progress=False)
    assert _recall_at_1(seq, vmap) >= _recall_at_1(frames, vmap) - 0.02
    qvec = np.stack([encoder.describe([f.rgb])[0][0] for f in query])
    sims = qvec.astype(np.float64) @ np.asarray(vmap.descriptors, np.float64).T
    offline = sequence_match(sims, vmap.places.stamps, cfg, k=3,
                             query_positions=np.array([f.pose.position for f in query]),
                             place_positions=vmap.places.poses[:, :3])
    assert [o is not None for o in offline] == [b == 'sequence' for b in by]
    for got, want in zip(seq[first:], offline[first:]):
        assert_same_ranking(list(zip(got.place_ids, got.scores)), [(m.place_id, m.score) for m in want],
                            atol=1e-4)


def test_needing_odometry_without_it_is_exactly_single_frame_matching(world) -> None:
    vmap, encoder, query = world
    cfg = SequenceConfig(length=LENGTH, without_odometry='single_frame')
    single = Localizer(vmap, encoder, top_k=3)
    seq = Localizer(vmap, encoder, top_k=3, sequence=cfg)
    for frame in query[:2 * LENGTH]:
        want, got = single.localize(frame.rgb, frame.stamp), seq.localize(frame.rgb, frame.stamp)
        assert [(m.place_id, m.score) for m in got.matches] == [(m.place_id, m.score) for m in want.matches]
        assert not got.sequence_used and got.sequence_history == 0
    answered = [seq.localize(f.rgb, f.stamp + 1e3, odometry=f.pose) for f in query[:2 * LENGTH]]
    assert answered[-1].sequence_used and answered[-1].sequence_spacing == 'distance'


def test_localizer_answers_as_the_offline_function_over_the_full_matrix(world) -> None:
    vmap, encoder, query = world
    cfg = SequenceConfig(length=LENGTH)
    loc = Localizer(vmap, encoder, top_k=3, sequence=cfg)
    online = [loc.localize(f.rgb, f.stamp) for f in query]
    qvec = np.stack([encoder.describe([f.rgb])[0][0] for f in query])
    sims = qvec.astype(np.float64) @ np.asarray(vmap.descriptors, np.float64).T
    offline = sequence_match(sims, np.array([p.stamp for p in vmap.places]), cfg, k=3)
    for got, want in zip(online[LENGTH - 1:], offline[LENGTH - 1:]):
        # float32 per frame vs a float64 matrix: the same answer to rounding (near ties may swap)
        assert_same_ranking([(m.place_id, m.score) for m in got.matches],
                            [(m.place_id, m.score) for m in want], atol=1e-4)


def test_shortlist_mode_runs_on_the_index_top_k(world) -> None:
    vmap, encoder, query = world
    loc = Localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=LENGTH, shortlist=20))
    records = run_queries(loc, query, progress=False)
    assert records[-1].extra['matched_by'] == 'sequence' and len(records[-1].place_ids) == 3
    single = run_queries(Localizer(vmap, encoder, top_k=3), query, progress=False)
    assert _recall_at_1(records, vmap) >= _recall_at_1(single, vmap)


def test_changing_settings_restarts_the_history(world) -> None:
    vmap, encoder, query = world
    loc = Localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=2))
    assert not loc.localize(query[0].rgb, query[0].stamp).sequence_used
    assert loc.localize(query[1].rgb, query[1].stamp).sequence_used
    loc.configure_sequence(SequenceConfig(length=2, max_velocity=1.5))
    assert not loc.localize(query[2].rgb, query[2].stamp).sequence_used
    loc.configure_sequence(SequenceConfig())
    out = loc.localize(query[3].rgb, query[3].stamp)
    assert not out.sequence_used and out.sequence_history == 0


def test_multi_vector_maps_use_the_per_place_votes() -> None:
    """SegVLAD-style places (several vectors each): a noisy walk along the map is followed."""
    rng = np.random.default_rng(0)
    dim, places, per_place = 32, 120, 6
    vmap = VprMap.empty({'name': 'multi', 'dim': dim, 'multi_vector': True, 'config': {}})
    centres = rng.standard_normal((places, per_place, dim))
    for p in range(places):
        v = centres[p] / np.linalg.norm(centres[p], axis=1, keepdims=True)
        vmap.add(float(p), None, v)
    loc = Localizer(vmap, IdentityOnly(vmap.meta.encoder), top_k=3, sequence=SequenceConfig(length=LENGTH))
    single_hits = seq_hits = 0
    for i in range(40):
        truth = 30 + i
        keep = rng.choice(per_place, 2, replace=False)  # a partial view: 2 of the place's segments ...
        q = centres[truth, keep] + rng.standard_normal((2, dim)) * 1.3  # ... under heavy change
        out = loc.search(float(i), q / np.linalg.norm(q, axis=1, keepdims=True))
        if out.sequence_used:
            seq_hits += abs(out.matches[0].place_id - truth) <= 1
            single_hits += abs(out.single_frame[0].place_id - truth) <= 1
    assert seq_hits > single_hits and seq_hits >= 0.8 * (40 - LENGTH + 1), (single_hits, seq_hits)


def test_incremental_loop_within_one_run() -> None:
    """Places appended online, recent ones excluded as the loop filter does: the revisit is found."""
    frames, _ = render_traversal('mapping', seed=0, image_size=SIZE, scale=0.3)
    encoder = create_encoder('raw_pixels', {})
    vmap = VprMap.empty(encoder.identity())
    loc = Localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=LENGTH))
    separation = 30.0
    judged = []
    for frame in frames:
        exclude = {p.id for p in vmap.places if frame.stamp - p.stamp < separation}
        out = loc.localize(frame.rgb, frame.stamp, exclude)
        assert not exclude & {m.place_id for m in out.matches}
        if out.sequence_used and out.matches:
            best = vmap.place(out.matches[0].place_id)
            revisit = any(frame.stamp - p.stamp >= separation
                          and np.linalg.norm(np.subtract(p.pose.position, frame.pose.position)[:2]) <= 10.0
                          for p in vmap.places)
            if revisit:
                dist = np.linalg.norm(np.subtract(best.pose.position, frame.pose.position)[:2])
                judged.append(dist <= 10.0)
        loc.add_place(frame.stamp, frame.pose, out.vectors)
    assert len(judged) >= 5 and np.mean(judged) >= 0.8, judged


class _PlacesPerFrame(Localizer):
    """Velocities in map places per frame, as before they were scaled to a grown map's keyframe rate."""

    sequence_velocity_scale = 1.0


def _loop_with_keyframes_every_other_frame(localizer: type[Localizer]) -> tuple[Localizer, list[bool]]:
    """Whether each revisiting frame's sequence answer is within 10 m, keyframes every 2nd frame."""
    frames, _ = render_traversal('mapping', seed=0, image_size=SIZE, scale=0.3)
    encoder = create_encoder('raw_pixels', {})
    vmap = VprMap.empty(encoder.identity())
    loc = localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=LENGTH))
    assert loc.sequence_velocity_scale == 1.0  # nothing added yet: velocities as configured
    judged = []

    def dist(a, b) -> float:
        return float(np.linalg.norm(np.subtract(a.pose.position, b.pose.position)[:2]))

    for i, frame in enumerate(frames):
        exclude = {p.id for p in vmap.places if frame.stamp - p.stamp < 30.0}
        out = loc.localize(frame.rgb, frame.stamp, exclude)
        if out.sequence_used and out.matches and any(
                frame.stamp - p.stamp >= 30.0 and dist(p, frame) <= 10.0 for p in vmap.places):
            judged.append(dist(vmap.place(out.matches[0].place_id), frame) <= 10.0)
        if i % 2 == 0:
            loc.add_place(frame.stamp, frame.pose, out.vectors)
    return loc, judged


def test_a_grown_map_scales_velocities_to_its_keyframe_rate() -> None:
    """Keyframes every other frame: a velocity of 1 means 0.5 places per frame, and the revisit is
    followed far better than with velocities in places per frame (0.8-1.2 cannot follow 0.5)."""
    loc, scaled = _loop_with_keyframes_every_other_frame(Localizer)
    assert loc.sequence_velocity_scale == pytest.approx(0.5, abs=0.01)
    _, fixed = _loop_with_keyframes_every_other_frame(_PlacesPerFrame)
    assert len(scaled) == len(fixed) >= 10
    assert np.mean(scaled) >= 0.7 and np.mean(scaled) >= np.mean(fixed) + 0.3, (scaled, fixed)

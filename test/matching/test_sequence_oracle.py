"""Sequence answers against a reference oracle: a plain diagonal scorer written here, independently
of vpr_ros.matching.sequence (the mean raw similarity along a velocity-1 line, no normalisation).

Where every single frame is already right, the sequence must be right too (it answered far away
on a corridor-like map before the whole-map normalisation, issue 24); where single frames are
noisy, the sequence may differ from the oracle (it searches velocities, normalises per frame) but
must not be worse than it by more than ``MARGIN`` in Recall@1, nor worse than single frames.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from vpr_ros.encoders import create_encoder
from vpr_ros.matching.sequence import SequenceConfig, sequence_match
from vpr_ros.sample import render_traversal

LENGTHS = (3, 5, 10)
TOLERANCE = 2   # places either side that count as right (+-2 frames, as the real corridor's ground truth)
MARGIN = 0.05  # Recall@1 the sequence may lose against the oracle on noisy frames: its velocity search
#                (0.8-1.2) may end a line a place or two beside the velocity-1 line
SAMPLE_DIST_M = 10.0  # right on the sample world: within 10 m (frames every 4 m: about +-2 frames)


def oracle_top1(sims: np.ndarray, length: int) -> np.ndarray:
    """Per query row q >= length - 1: the end place e maximising mean_k sims[q - k, e - k]."""
    queries, places = sims.shape
    out = np.full(queries, -1)
    for q in range(length - 1, queries):
        best, best_e = -np.inf, -1
        for e in range(length - 1, places):
            value = sum(sims[q - k, e - k] for k in range(length)) / length
            if value > best:
                best, best_e = value, e
        out[q] = best_e
    return out


def sequence_top1(sims: np.ndarray, length: int, **settings) -> np.ndarray:
    stamps = np.arange(sims.shape[1], dtype=float)
    results = sequence_match(sims, stamps, SequenceConfig(length=length, **settings))
    return np.array([r[0].place_id if r else -1 for r in results])


def recall(top1: np.ndarray, truth: np.ndarray, frames: slice) -> float:
    return float(np.mean(np.abs(top1[frames] - truth[frames]) <= TOLERANCE))


def recall_by_distance(top1: np.ndarray, dist: np.ndarray, frames: slice) -> float:
    """Share of queries whose answer lies within SAMPLE_DIST_M of them (dist: queries x places)."""
    rows = np.arange(len(top1))[frames]
    return float(np.mean(dist[rows, top1[frames]] <= SAMPLE_DIST_M))


def corridor(noise: float, seed: int, places: int = 111, correlation: float = 3.0) -> np.ndarray:
    """Cosine similarities of a short self-similar route: map descriptors share a strong common
    part and change smoothly along the route (neighbouring places look alike over several places,
    as frames walking down a corridor do); query i is place i plus independent noise."""
    rng = np.random.default_rng(seed)
    along = gaussian_filter1d(rng.standard_normal((places, 256)), correlation, axis=0)
    along /= along.std()
    common = 2.0 * rng.standard_normal(256)
    mapped = common + along
    query = mapped + noise * rng.standard_normal(mapped.shape)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(query) @ unit(mapped).T


@pytest.fixture(scope='module')
def sample_world() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map descriptors, query descriptors, query-to-place distances in metres) of a small
    rendering of the sample world's mapping and query traversals (raw pixels)."""
    encoder = create_encoder('raw_pixels', {})
    frames = {name: render_traversal(name, seed=0, image_size=(48, 64), scale=0.15)[0]
              for name in ('mapping', 'query')}
    desc = {name: np.stack([v[0] for v in encoder.describe([f.rgb for f in fr])]).astype(np.float64)
            for name, fr in frames.items()}
    mpos = np.array([f.pose.position[:2] for f in frames['mapping']])
    qpos = np.array([f.pose.position[:2] for f in frames['query']])
    return desc['mapping'], desc['query'], np.linalg.norm(qpos[:, None] - mpos[None], axis=2)


@pytest.mark.parametrize('length', LENGTHS)
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_every_single_frame_right_so_the_sequence_is_right_on_a_corridor(length: int, seed: int) -> None:
    sims = corridor(noise=0.7, seed=seed)
    truth = np.arange(len(sims))
    full = slice(length - 1, None)
    assert recall(np.argmax(sims, axis=1), truth, slice(None)) == 1.0  # the premise
    assert recall(oracle_top1(sims, length), truth, full) == 1.0
    assert recall(sequence_top1(sims, length), truth, full) == 1.0


@pytest.mark.parametrize('length', LENGTHS)
def test_every_single_frame_right_so_the_sequence_is_right_on_the_sample_world(sample_world, length) -> None:
    """Map frames of the sample world against themselves plus descriptor noise: the route's own
    similarity structure (neighbouring frames alike), every single frame right."""
    mapped, _, _ = sample_world
    rng = np.random.default_rng(0)
    query = mapped + 0.3 * mapped.std() * rng.standard_normal(mapped.shape)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    sims = query @ mapped.T
    truth = np.arange(len(sims))
    full = slice(length - 1, None)
    assert recall(np.argmax(sims, axis=1), truth, slice(None)) == 1.0
    assert recall(oracle_top1(sims, length), truth, full) == 1.0
    assert recall(sequence_top1(sims, length), truth, full) == 1.0


@pytest.mark.parametrize('length', LENGTHS)
@pytest.mark.parametrize('noise', [4.0, 6.0])
def test_noisy_corridor_frames_the_sequence_is_not_worse_than_the_oracle(length: int, noise: float) -> None:
    sims = np.concatenate([corridor(noise=noise, seed=seed) for seed in range(3)])
    truth = np.tile(np.arange(111), 3)
    per_run = [slice(r * 111 + length - 1, (r + 1) * 111) for r in range(3)]
    seq = np.concatenate([sequence_top1(sims[r * 111:(r + 1) * 111], length) for r in range(3)])
    orc = np.concatenate([oracle_top1(sims[r * 111:(r + 1) * 111], length) for r in range(3)])
    single = np.argmax(sims, axis=1)
    r_seq = np.mean([recall(seq, truth, s) for s in per_run])
    r_orc = np.mean([recall(orc, truth, s) for s in per_run])
    r_single = np.mean([recall(single, truth, s) for s in per_run])
    assert r_single < 1.0  # the premise: noisy frames
    assert r_seq >= r_orc - MARGIN and r_seq >= r_single, (r_single, r_orc, r_seq)


@pytest.mark.parametrize('length', LENGTHS)
def test_on_the_sample_worlds_query_traversal_the_sequence_is_not_worse_than_the_oracle(sample_world,
                                                                                       length) -> None:
    """The query traversal (overcast evening, other lane) against the mapping one: noisy frames."""
    mapped, query, dist = sample_world
    sims = query @ mapped.T
    full = slice(length - 1, None)
    r_single = recall_by_distance(np.argmax(sims, axis=1), dist, full)
    r_orc = recall_by_distance(oracle_top1(sims, length), dist, full)
    r_seq = recall_by_distance(sequence_top1(sims, length), dist, full)
    assert r_single < 1.0
    assert r_seq >= r_orc - MARGIN and r_seq >= r_single, (r_single, r_orc, r_seq)


@pytest.mark.parametrize('settings', [{'length': 1}, {'length': 5, 'single_frame_weight': 1.0}])
def test_the_current_frame_alone_ranks_as_single_frame_matching(settings) -> None:
    """Length 1, or all weight on the current frame: the normalisation must not change a frame's
    own ranking (the local window did, which is why blending in more of the frame made it worse)."""
    sims = corridor(noise=4.0, seed=3)
    results = sequence_match(sims, np.arange(sims.shape[1], dtype=float), SequenceConfig(**settings))
    answered = [(q, r[0].place_id) for q, r in enumerate(results) if r]
    assert len(answered) >= len(sims) - 4
    assert all(place == int(np.argmax(sims[q])) for q, place in answered)

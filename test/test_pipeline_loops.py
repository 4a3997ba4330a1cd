"""evaluate --loops: a map grown from empty over one traversal, closures with and without verification."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from test.helpers import blob_image, textured_frames, type_mismatches
from vpr_ros.cli import main
from vpr_ros.encoders import create_encoder
from vpr_ros.evaluation.metrics import LOOP_FUNNEL_STAGES, Thresholds, full_precision_threshold
from vpr_ros.evaluation.results import LoopEvaluationResults
from vpr_ros.frames import Frame, Pose
from vpr_ros.matching.loop_closure import LoopClosureConfig
from vpr_ros.pipeline import LoopEvaluationSettings, evaluate_loops
from vpr_ros.sources.bag import BagSource, write_bag

PLACES = 12


def look(place: int, blobs: int, shift: int = 0) -> np.ndarray:
    """A place's smooth background (what raw_pixels sees) with fine blobs (what local features see)."""
    base = textured_frames(PLACES, size=(240, 320))[place].rgb.astype(np.float32)
    fine = blob_image(blobs, (240, 320)).astype(np.float32)
    img = np.clip(0.6 * base + 0.4 * fine, 0, 255).astype(np.uint8)
    return np.roll(img, shift, axis=1)


@pytest.fixture(scope='module')
def loop_bag(tmp_path_factory) -> str:
    """12 places 1 s apart, then 6 true revisits (places 0-5), then 6 look-alikes of places 6-11 far away."""
    frames = [Frame(100.0 + i, look(i, i), Pose.from_xy_yaw(20.0 * i, 0.0, 0.0)) for i in range(PLACES)]
    t = 100.0 + PLACES + 20
    for k in range(6):
        frames.append(Frame(t + k, look(k, k, shift=4), Pose.from_xy_yaw(20.0 * k + 1.0, 1.0, 0.0)))
    for k in range(6, 12):
        frames.append(Frame(t + k, look(k, 100 + k), Pose.from_xy_yaw(20.0 * k, 500.0, 0.0)))
    path = str(tmp_path_factory.mktemp('loops') / 'bag')
    write_bag(path, frames)
    return path


def test_verification_rejects_look_alikes_and_keeps_true_revisits(loop_bag, tmp_path) -> None:
    settings = LoopEvaluationSettings(loop_closure=LoopClosureConfig(min_score=0.5, min_time_separation=10.0,
                                                                     consistency_frames=1, max_rate_hz=0,
                                                                     verified_frames=1),
                                      keyframe_min_interval=0.0)
    results = evaluate_loops(create_encoder('raw_pixels'), BagSource(loop_bag), str(tmp_path / 'r'), settings,
                             Thresholds(5.0), progress=False)
    assert type_mismatches(results, LoopEvaluationResults) == []  # the types the CLI and plots read it by
    with open(tmp_path / 'r' / 'results.json', encoding='utf-8') as fh:
        assert type_mismatches(json.load(fh), LoopEvaluationResults) == []
    lp = results['loops']
    assert lp['frames'] == 24 and lp['keyframes'] == 24 and lp['loop_frames'] == 6
    plain, checked = lp['without_verification'], lp['with_verification']
    assert plain['published'] == 12 and plain['correct'] == 6  # the look-alikes score like revisits
    assert checked['published'] == 6 and checked['correct'] == 6 and checked['precision'] == 1.0
    assert checked['loop_frames_closed'] == 6 and checked['recall'] == 1.0
    assert checked['statuses']['failed_geometric_verification'] == 6
    assert all(e['inliers'] >= 15 for e in checked['events'])
    assert checked['score_threshold']['recall_at_100_precision'] == 1.0
    assert lp['verification_ms_per_candidate']['count'] >= 12
    saved = json.load(open(tmp_path / 'r' / 'results.json'))
    assert saved['loops']['with_verification']['published'] == 6
    assert os.path.getsize(tmp_path / 'r' / 'loop_pr.png') > 1000
    assert os.path.getsize(tmp_path / 'r' / 'loop_funnel.png') > 1000
    # every revisit survives every stage of the recall funnel
    assert checked['funnel'] == {'loop_frames': 6, **{stage: 6 for stage in LOOP_FUNNEL_STAGES}}
    assert [f['lost_at'] for f in checked['loop_frames_lost_at']] == [None] * 6


def test_cli_prints_the_threshold_for_full_precision(loop_bag, tmp_path, capsys) -> None:
    assert main(['evaluate', '--loops', '--queries', loop_bag, '--encoder', 'raw_pixels', '--dist', '5',
                 '--min-score', '0.5', '--min-time-separation', '10', '--consistency-frames', '1',
                 '--keyframe-interval', '0', '--out', str(tmp_path / 'r')]) == 0
    out = capsys.readouterr().out
    assert 'with verification' in out and 'min_score for 100% precision' in out
    assert main(['evaluate', '--loops', '--map', 'x', '--queries', loop_bag]) == 2
    # --encoder belongs to --loops: evaluate --map takes the map's encoder, and said nothing before
    capsys.readouterr()
    assert main(['evaluate', '--map', 'x', '--queries', loop_bag, '--encoder', 'raw_pixels']) == 2
    assert '--encoder applies to --loops only' in capsys.readouterr().err


def test_full_precision_threshold() -> None:
    th = full_precision_threshold([0.9, 0.8, 0.7, 0.7, 0.6], [True, True, True, False, True], positives=8)
    assert th['min_score'] == 0.8 and th['recall_at_100_precision'] == 0.25 and th['first_wrong_score'] == 0.7
    assert full_precision_threshold([0.9, 0.5], [False, True], 2)['min_score'] is None
    assert full_precision_threshold([0.9, 0.5], [True, True], 4)['recall_at_100_precision'] == 0.5


def test_vocabulary_encoder_bootstraps_from_the_first_keyframes(loop_bag) -> None:
    """anyloc_vlad from an empty map: the first N keyframes fit the vocabulary (no answers until then),
    then become places, as in the node."""
    settings = LoopEvaluationSettings(loop_closure=LoopClosureConfig(min_score=0.5, min_time_separation=10.0,
                                                                     consistency_frames=1, max_rate_hz=0),
                                      keyframe_min_interval=0.0, bootstrap_frames=4)
    encoder = create_encoder('anyloc_vlad', {'image_size': [96, 128], 'num_clusters': 4})
    results = evaluate_loops(encoder, BagSource(loop_bag), None, settings, Thresholds(5.0), progress=False)
    lp = results['loops']
    assert lp['vocabulary'].startswith('bootstrapped from the first 4 keyframes')
    assert lp['frames'] == 24 and lp['keyframes'] == 24 and encoder.is_fitted
    # every frame after the fit was answered, and the 4 bootstrap keyframes decided after it
    assert sum(lp['with_verification']['statuses'].values()) == 24
    funnel = lp['with_verification']['funnel']
    assert funnel['loop_frames'] == lp['loop_frames'] == 6 and funnel['answered'] == 6  # revisits: after it


def test_revisits_within_the_bootstrap_keyframes_are_decided_after_the_fit(loop_bag) -> None:
    """Every frame of the run is a bootstrap keyframe: before, no loop frame was answered; now each is
    decided once the vocabulary exists, and what is published is correct."""
    settings = LoopEvaluationSettings(loop_closure=LoopClosureConfig(min_score=0.5, min_time_separation=10.0,
                                                                     consistency_frames=1, max_rate_hz=0),
                                      keyframe_min_interval=0.0, bootstrap_frames=24)
    encoder = create_encoder('anyloc_vlad', {'image_size': [96, 128], 'num_clusters': 4})
    lp = evaluate_loops(encoder, BagSource(loop_bag), None, settings, Thresholds(5.0),
                        progress=False)['loops']
    checked = lp['with_verification']
    assert sum(checked['statuses'].values()) == 24
    assert checked['funnel']['answered'] == lp['loop_frames'] == 6
    assert checked['loop_frames_closed'] > 0 and checked['precision'] == 1.0

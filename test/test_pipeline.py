"""Pipeline: helpers that must not trust a source's header count, and build_map keeping only what the
encoder's fit reads (100 4K fit frames took 2.9 GB)."""
import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.pipeline import build_map, spread_sample
from vpr_ros.skips import SkipCounter


@pytest.mark.parametrize('n', [0, 1, 399, 400, 401, 1000, 5000])
def test_spread_sample_covers_a_stream_of_unknown_length_evenly(n):
    kept = spread_sample(iter(range(n)), 400)
    if n <= 400:
        assert kept == list(range(n))
        return
    assert 200 <= len(kept) <= 400
    stride = kept[1] - kept[0]
    assert kept == list(range(0, n, stride))  # even stride from the first item to the end
    assert kept[-1] + stride >= n


class FrameList:
    """A source over frames in memory."""

    def __init__(self, frames):
        self.frames_ = frames
        self.image_count = len(frames)
        self.skips = SkipCounter()

    def frames(self, require_pose=True):
        yield from self.frames_


def test_build_map_holds_fit_images_at_the_encoder_input_size(tmp_path, monkeypatch):
    encoder = create_encoder('anyloc_vlad', {'image_size': [96, 128], 'batch_size': 4, 'threads': 2})
    seen = []
    fit = encoder.fit

    def spy(images):
        seen.extend(np.shape(im) for im in images)
        fit(images)

    monkeypatch.setattr(encoder, 'fit', spy)
    build_map(FrameList(textured_frames(4, size=(480, 640))), encoder, str(tmp_path / 'm'), progress=False,
              local_features=None)
    assert seen == [(96, 128, 3)] * 4


def test_calibration_rates_only_answerable_queries():
    """The confidence is P(right) for a query of a mapped place: a query with no map place within
    the threshold (always wrong) is counted apart, not binned."""
    from types import SimpleNamespace

    from vpr_ros.evaluation.metrics import Thresholds
    from vpr_ros.pipeline import calibration_summary

    per_query = ([{'place_ids': [1], 'correct_at_1': True, 'answerable': True, 'confidence': 0.8}] * 8
                 + [{'place_ids': [1], 'correct_at_1': False, 'answerable': True, 'confidence': 0.8}] * 2
                 + [{'place_ids': [1], 'correct_at_1': False, 'answerable': False, 'confidence': 0.8}] * 5)
    out = calibration_summary(SimpleNamespace(confidence_model=None), per_query, Thresholds(5.0))
    assert out['answers'] == 10 and out['unanswerable'] == 5
    assert out['ece'] == pytest.approx(0.0, abs=1e-9) and out['accuracy'] == pytest.approx(0.8)

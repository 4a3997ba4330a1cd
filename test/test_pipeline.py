"""build_map keeps only what the encoder's fit reads (issue 23: 100 4K fit frames took 2.9 GB)."""
import numpy as np

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.pipeline import build_map
from vpr_ros.skips import SkipCounter


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

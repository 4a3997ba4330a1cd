"""The backbone feature cache: every frame is cached, whatever count the source's header claims."""
import numpy as np
import pytest
import torch

from vpr_ros.frames import Frame, Pose
from vpr_ros.training.cache import FeatureCache


def _frames(n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield i % 2, Frame(float(i), rng.integers(0, 255, (8, 8, 3), np.uint8), Pose((float(i), 0.0, 0.0)))


def _preprocess(imgs):
    return torch.from_numpy(np.stack(imgs).astype(np.float32)).mean(dim=(1, 2))  # (B, 3)


@pytest.mark.parametrize('expected', [0, 3, 11, 10 ** 12])
def test_the_cache_holds_every_frame_whatever_the_expected_count(tmp_path, expected):
    """A bag's metadata claiming 60 of 118 images made train use 60; 10^12 tried to allocate TiBs."""
    cache = FeatureCache.build(str(tmp_path / 'c'), 'k', _frames(11), expected, torch.nn.Identity(),
                               _preprocess, copies=2, seed=0, batch=4, extra={}, progress=False)
    assert len(cache.table) == 11 and cache.copies == 2
    assert cache.table.xyz[:, 0].tolist() == [float(i) for i in range(11)]
    features = cache.get(np.arange(11), np.zeros(11, np.int64))
    want = _preprocess([f.rgb for _, f in _frames(11)])
    assert torch.allclose(features, want.half().float())
    assert FeatureCache.open(str(tmp_path / 'c'), 'k').table.stamp.tolist() == [float(i) for i in range(11)]

"""BoQ attention overlays render to a PNG (random weights, small input)."""
import cv2
import numpy as np
import pytest

from vpr_ros.errors import VprError
from vpr_ros.explain import explain_boq


def test_explain_boq_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / 'frame.png'
    cv2.imwrite(str(image), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    out = explain_boq(str(image), str(tmp_path / 'out' / 'attn.png'), {'image_size': [96, 96]})
    png = cv2.imread(out)
    assert png is not None and png.shape[0] > 200 and png.shape[1] > 400
    assert png.std() > 10  # something was drawn


def test_explain_boq_missing_image(tmp_path):
    with pytest.raises(VprError, match='unreadable image file: .*nope.png: No such file'):
        explain_boq(str(tmp_path / 'nope.png'), str(tmp_path / 'o.png'))

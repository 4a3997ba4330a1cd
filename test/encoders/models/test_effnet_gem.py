import os

import numpy as np
import pytest
import torch

from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.backbones.efficientnet import EfficientNetLite, lite_weights_path
from vpr_ros.encoders.weights import load_strict, read_state_dict
from vpr_ros.errors import WeightsError


def test_real_weights_classify_a_natural_image():
    """The ImageNet weights and our TF-'SAME' architecture agree: Grace Hopper -> military uniform."""
    import cv2
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data', 'sample_data', 'grace_hopper.jpg')
    model = EfficientNetLite('lite0')
    load_strict(model, read_state_dict(lite_weights_path('lite0')), 'lite0')
    model.eval()
    img = cv2.resize(cv2.imread(path)[..., ::-1], (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = torch.from_numpy(((img - 127.0) / 128.0).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        top = model(x).argmax(1).item()
    assert top == 652  # 'military uniform'


def test_descriptor_contract_and_determinism():
    enc = create_encoder('effnet_gem', {'image_size': [64, 96]})
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8) for _ in range(3)]
    d = enc.encode(imgs)
    assert d.shape == (3, 1280) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    assert np.allclose(enc.encode(imgs[:1]), d[:1], atol=1e-5)  # batch size does not change results
    assert enc.identity()['weights_fingerprint'].startswith('sha256:')


def test_bad_weights_file(tmp_path):
    bad = tmp_path / 'w.pth'
    bad.write_bytes(b'\x00' * 100)
    with pytest.raises(WeightsError, match='cannot read weights'):
        create_encoder('effnet_gem', {'weights': str(bad)})
    torch.save({'_conv_stem.weight': torch.zeros(1), 'extra': torch.zeros(1)}, tmp_path / 'wrong.pth')
    with pytest.raises(WeightsError, match='missing keys .*unexpected keys \\[extra\\]'):
        create_encoder('effnet_gem', {'weights': str(tmp_path / 'wrong.pth')})
    with pytest.raises(WeightsError, match='not found'):
        create_encoder('effnet_gem', {'weights': str(tmp_path / 'missing.pth')})


def test_bad_image_size():
    from vpr_ros.errors import ConfigError

    with pytest.raises(ConfigError, match='image_size'):
        create_encoder('effnet_gem', {'image_size': [0, 10]})


def test_checkpoints_with_numpy_extras_load_but_code_does_not(tmp_path):
    import os

    path = str(tmp_path / 'c.pth')
    torch.save({'state_dict': {'a.weight': torch.zeros(2)}, 'recalls': np.array([1.0, 2.0]), 'epoch': 3},
               path)
    assert list(read_state_dict(path)) == ['a.weight']

    class Evil:
        def __reduce__(self):
            return (os.system, ('true',))

    torch.save({'state_dict': {'a': torch.zeros(1)}, 'x': Evil()}, path)
    with pytest.raises(WeightsError, match='cannot read weights'):
        read_state_dict(path)

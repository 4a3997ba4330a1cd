"""ONNX export of the torch encoders, checked against onnxruntime (small inputs, random weights)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vpr_ros.encoders import create_encoder
from vpr_ros.errors import VprError
from vpr_ros.export import OPSET, export_onnx

# case -> (encoder, config, dim, also check another batch size through a second (same-seed) build)
CASES = {
    'effnet_gem': ('effnet_gem', {'image_size': [64, 96]}, 1280, True),
    'boq_resnet50': ('boq', {'image_size': [64, 64]}, 16384, True),
    'mixvpr': ('mixvpr', {'image_size': [64, 64]}, 4096, True),
    'salad': ('salad', {'image_size': [126, 126]}, 8448, False),  # ViT-B: one build is enough
    'gem': ('gem', {'image_size': [64, 64]}, 2048, True),
}


def check_dynamic_batch(path: str, input_shape: list[int], model, batch: int = 3) -> None:
    """The exported graph takes another batch size and agrees with torch on it."""
    x = torch.randn(batch, *input_shape[1:], generator=torch.Generator().manual_seed(5))
    got = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'image': x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize('case', sorted(CASES))
def test_export_matches_onnxruntime(case, tmp_path):
    torch.set_num_threads(2)
    name, config, dim, rebuild = CASES[case]
    batch = 1 if rebuild else 2
    report = export_onnx(name, str(tmp_path / f'{case}.onnx'), config, batch=batch)
    h, w = config['image_size']
    assert report['input_shape'] == [batch, 3, h, w]
    assert report['opset'] == OPSET and report['output_dim'] == dim
    assert report['max_abs_diff'] < 1e-4, report
    if rebuild:
        check_dynamic_batch(report['path'], report['input_shape'], create_encoder(name, config).model)


def test_export_boq_dinov2_tiny(tmp_path):
    report = export_onnx('boq', str(tmp_path / 'boq_dino.onnx'),
                         {'backbone': 'dinov2_vitb14', 'image_size': [28, 42]}, batch=2)
    assert report['input_shape'] == [2, 3, 28, 42] and report['output_dim'] == 12288
    assert report['max_abs_diff'] < 1e-4, report


def test_export_netvlad_with_map_state(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(4)]
    config = {'image_size': [64, 64], 'clusters': 4, 'crop': 'layer3', 'backbone': 'resnet18',
              'fit_descriptors': 64}
    fitted = create_encoder('netvlad', config)
    fitted.fit(images)
    state = fitted.get_state()
    with pytest.raises(VprError, match='fitted state'):
        export_onnx('netvlad', str(tmp_path / 'nv.onnx'), config)
    report = export_onnx('netvlad', str(tmp_path / 'nv.onnx'), config, state=state)
    assert report['output_dim'] == 4 * 256 and report['max_abs_diff'] < 1e-4, report
    check_dynamic_batch(report['path'], report['input_shape'], fitted.model, batch=2)


@pytest.mark.parametrize('name', ['sift_vlad', 'raw_pixels'])
def test_non_torch_encoders_are_refused(name, tmp_path):
    with pytest.raises(VprError, match='not a torch network'):
        export_onnx(name, str(tmp_path / 'x.onnx'))


def test_pca_is_refused(tmp_path):
    with pytest.raises(VprError, match='pca_dim'):
        export_onnx('gem', str(tmp_path / 'x.onnx'), {'image_size': [64, 64], 'pca_dim': 8})

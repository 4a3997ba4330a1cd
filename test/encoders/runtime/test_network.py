"""Encoders on onnxruntime and OpenVINO: equal to torch in f32, cached graphs, fallbacks and errors.

Small inputs and random or small real weights keep this fast; every test writes its graphs under
a temporary cache directory (runtime_cache), never the user's.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.runtime import settings
from vpr_ros.encoders.runtime.backends import openvino_bf16_supported
from vpr_ros.encoders.runtime.network import Network
from vpr_ros.errors import ConfigError
from vpr_ros.mapdb.meta import compatibility_problems

pytest.importorskip('onnxruntime')
pytest.importorskip('openvino')

F32_ATOL = settings.F32_TOLERANCE
RUNTIMES = ('onnxruntime', 'openvino')
# encoder -> config: small inputs; the zoo heads are randomly initialised (seeded, so torch and the
# exported graph see the same weights)
CASES = {
    'effnet_gem': {'image_size': [64, 96]},
    'anyloc_vlad': {'image_size': [64, 96]},
    'segvlad': {'image_size': [64, 96], 'segments': 8, 'pca_dim': 0},
    'gem': {'image_size': [64, 64]},
    'mixvpr': {'image_size': [64, 64]},
    'boq': {'image_size': [64, 64]},
}


@pytest.fixture(scope='module')
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp('graphs'))


def noisy(n: int, seed: int) -> list[np.ndarray]:
    """Textures with pixel noise: every patch feature differs. On smooth synthetic textures many patches
    share one feature, a VLAD word's centre then equals its members, and intra-normalisation blows
    their residual sum (rounding noise: 1e-7 in torch, 1e-6 in another runtime) up to unit length."""
    return [f.rgb for f in textured_frames(n, seed=seed, size=(72, 100), noise=25.0)]


@pytest.fixture(scope='module')
def images() -> list[np.ndarray]:
    return noisy(6, 0)


@pytest.fixture(scope='module')
def map_images() -> list[np.ndarray]:
    """What vocabularies are fitted on: other images than the encoded ones."""
    return noisy(12, 1)


def make(name: str, cache: str, runtime: str, state: dict | None = None, **extra) -> object:
    return create_encoder(name, {**CASES[name], 'threads': 1, 'runtime': runtime, 'runtime_cache': cache,
                                 **extra}, state)


def describe(encoder, images) -> list[np.ndarray]:
    return encoder.describe(images)


@pytest.mark.parametrize('runtime', RUNTIMES)
@pytest.mark.parametrize('name', sorted(CASES))
def test_descriptors_equal_torch_in_f32(name: str, runtime: str, cache: str, images, map_images) -> None:
    reference = make(name, cache, 'torch')
    if reference.requires_fit:
        reference.fit(map_images)
    encoder = make(name, cache, runtime, reference.get_state())
    want, got = describe(reference, images), describe(encoder, images)
    assert {n.label: n.resolved for n in encoder.networks()} == {n.label: runtime for n in encoder.networks()}
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=F32_ATOL, rtol=0)
    # the runtime is not part of the identity a map records: a map of one runtime serves the other
    assert encoder.identity() == reference.identity()


def test_dense_features_equal_torch(cache: str, images) -> None:
    reference = make('anyloc_vlad', cache, 'torch')
    for runtime in RUNTIMES:
        encoder = make('anyloc_vlad', cache, runtime)
        np.testing.assert_allclose(encoder.dense.extract(images[:3]), reference.dense.extract(images[:3]),
                                   atol=F32_ATOL, rtol=0)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_anyloc_graph_takes_pixels_and_runs_the_vlad_inside(runtime: str, images, map_images,
                                                            tmp_path) -> None:
    reference = make('anyloc_vlad', str(tmp_path), 'torch')
    reference.fit(map_images)
    encoder = make('anyloc_vlad', str(tmp_path), runtime, reference.get_state())
    for image in images[:2]:  # batch 1: OpenVINO's static-shape compile
        np.testing.assert_allclose(encoder.encode([image]), reference.encode([image]), atol=F32_ATOL, rtol=0)
    # the primary graph (uint8 pixels -> features: fitting, SegVLAD) and its VLAD variant; no float input
    assert sorted(f.split('-', 2)[2] for f in os.listdir(tmp_path)) == ['u8-vlad32.onnx', 'u8.onnx']
    encoder.dense.network.heads_in_graph = False  # the same VLAD in numpy, after the pixel-input trunk
    np.testing.assert_allclose(encoder.encode(images[:3]), reference.encode(images[:3]),
                               atol=F32_ATOL, rtol=0)


def test_a_head_that_does_not_export_runs_outside_the_graph(images, map_images, tmp_path, caplog) -> None:
    reference = make('anyloc_vlad', str(tmp_path), 'torch')
    reference.fit(map_images)
    encoder = make('anyloc_vlad', str(tmp_path), 'onnxruntime', reference.get_state())

    def unexportable(features, centres):
        raise RuntimeError('no ONNX mapping')
    encoder.vlad_head = dataclasses.replace(encoder.vlad_head, module=unexportable)
    with caplog.at_level(logging.WARNING, logger='vpr_ros.encoders.runtime'):
        got = encoder.encode(images[:2])
    assert 'graph variant does not run on onnxruntime' in caplog.text
    assert encoder.runtimes() == {'dense_efficientnet_lite0': 'onnxruntime'}
    np.testing.assert_allclose(got, reference.encode(images[:2]), atol=F32_ATOL, rtol=0)


def test_graph_is_cached_by_fingerprint(cache: str, images, tmp_path) -> None:
    a = make('effnet_gem', str(tmp_path), 'onnxruntime')
    a.encode(images[:1])
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 1 and files[0].startswith('effnet_gem-') and files[0].endswith('.onnx')
    stamp = os.path.getmtime(tmp_path / files[0])
    b = make('effnet_gem', str(tmp_path), 'openvino')  # same network: the same file, not re-exported
    b.encode(images[:1])
    assert sorted(os.listdir(tmp_path)) == files and os.path.getmtime(tmp_path / files[0]) == stamp
    c = make('effnet_gem', str(tmp_path), 'onnxruntime', gem_p=4.0)  # another network: another file
    c.encode(images[:1])
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize('damage', ['garbage', 'another_graph'])
def test_a_damaged_cache_file_is_rebuilt(damage: str, images, tmp_path, caplog) -> None:
    a = make('effnet_gem', str(tmp_path), 'onnxruntime')
    want = a.encode(images[:2])
    (path,) = [tmp_path / f for f in os.listdir(tmp_path)]
    if damage == 'garbage':
        path.write_bytes(b'\x08\x07not a graph' * 10)
    else:  # a readable graph of another network (another input size) under this name
        other = make('effnet_gem', str(tmp_path / 'other'), 'onnxruntime', image_size=[32, 32])
        other.encode(images[:1])
        (other_path,) = (tmp_path / 'other').iterdir()
        path.write_bytes(other_path.read_bytes())
    with caplog.at_level(logging.WARNING, logger='vpr_ros.encoders.runtime'):
        b = make('effnet_gem', str(tmp_path), 'onnxruntime')
        np.testing.assert_allclose(b.encode(images[:2]), want, atol=F32_ATOL, rtol=0)
    assert 'rebuilding' in caplog.text
    assert b.runtimes() == {'effnet_gem': 'onnxruntime'}


def test_auto_takes_the_first_installed_runtime_and_falls_back(cache: str, images, monkeypatch) -> None:
    auto = make('effnet_gem', cache, 'auto')
    auto.encode(images[:1])
    assert auto.runtimes() == {'effnet_gem': 'openvino'}
    real = settings.installed
    monkeypatch.setattr(settings, 'installed', lambda r: r != 'openvino' and real(r))
    without = make('effnet_gem', cache, 'auto')
    without.encode(images[:1])
    assert without.runtimes() == {'effnet_gem': 'onnxruntime'}
    monkeypatch.setattr(settings, 'installed', lambda r: r == 'torch')
    bare = make('effnet_gem', cache, 'auto')
    np.testing.assert_allclose(bare.encode(images[:2]), auto.encode(images[:2]), atol=F32_ATOL, rtol=0)
    assert bare.runtimes() == {'effnet_gem': 'torch'}


def test_auto_skips_a_runtime_that_disagrees_with_torch(cache: str, images, monkeypatch, caplog) -> None:
    real = Network._make

    def broken_openvino(self, name, path, precision):
        backend = real(self, name, path, precision)
        if name == 'openvino':
            run = backend.run
            backend.run = lambda x, threads: run(x, threads) + 1e-3
        return backend
    monkeypatch.setattr(Network, '_make', broken_openvino)
    with caplog.at_level(logging.WARNING, logger='vpr_ros.encoders.runtime'):
        encoder = make('effnet_gem', cache, 'auto')
        encoder.encode(images[:1])
    assert encoder.runtimes() == {'effnet_gem': 'onnxruntime'}
    assert 'openvino not used' in caplog.text and 'differs from torch' in caplog.text


def test_a_graph_openvino_cannot_convert_falls_back_under_auto(images, tmp_path, caplog) -> None:
    """OpenVINO 2026.4 does not convert SALAD's optimal-transport head (an Unsqueeze of its ONNX
    export); auto then runs the same intact graph on onnxruntime instead of re-exporting it."""
    config = {'backbone': 'efficientnet_lite0', 'image_size': [160, 160], 'threads': 1,  # > 64 patches
              'runtime_cache': str(tmp_path)}
    reference = create_encoder('salad', {**config, 'runtime': 'torch'})
    with caplog.at_level(logging.WARNING, logger='vpr_ros.encoders.runtime'):
        encoder = create_encoder('salad', {**config, 'runtime': 'auto'})
        got = encoder.encode(images[:2])
    if encoder.runtimes() == {'salad': 'openvino'}:
        pytest.skip('this OpenVINO converts the SALAD head')
    assert encoder.runtimes() == {'salad': 'onnxruntime'}
    assert 'openvino not used' in caplog.text and 'rebuilding' not in caplog.text
    np.testing.assert_allclose(got, reference.encode(images[:2]), atol=F32_ATOL, rtol=0)
    with pytest.raises(settings.RuntimeUnavailable, match='OpenVINO cannot read'):
        create_encoder('salad', {**config, 'runtime': 'openvino'}).encode(images[:1])


def test_a_missing_requested_runtime_is_one_clear_error(cache: str, images, monkeypatch) -> None:
    monkeypatch.setattr(settings, 'installed', lambda r: r != 'openvino')
    encoder = make('effnet_gem', cache, 'openvino')
    with pytest.raises(settings.RuntimeUnavailable) as err:
        encoder.encode(images[:1])
    message = str(err.value)
    assert "runtime 'openvino' is not installed: pip install openvino" in message and '\n' not in message


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match='runtime must be one of'):
        create_encoder('effnet_gem', {'runtime': 'tensorflow'})
    with pytest.raises(ConfigError, match='precision int8 runs on openvino or onnxruntime, not runtime'):
        create_encoder('effnet_gem', {'runtime': 'torch', 'precision': 'int8'})
    with pytest.raises(ConfigError, match='precision bf16 runs on openvino'):
        create_encoder('effnet_gem', {'runtime': 'onnxruntime', 'precision': 'bf16'})
    with pytest.raises(ConfigError, match='device must be one of'):
        create_encoder('effnet_gem', {'device': 'tpu'})


def test_a_network_without_fixed_input_runs_on_torch_under_auto(images, tmp_path) -> None:
    encoder = create_encoder('raw_pixels', {'runtime': 'auto', 'runtime_cache': str(tmp_path)})
    encoder.encode(images[:1])
    assert encoder.networks() == [] and encoder.runtimes() == {}
    with pytest.raises(ConfigError, match='precision int8 does not apply'):
        create_encoder('raw_pixels', {'runtime': 'auto', 'precision': 'int8'}).fit(images)


def test_precision_is_map_identity_and_old_maps_were_f32(cache: str) -> None:
    f32 = make('effnet_gem', cache, 'auto').identity()
    bf16 = make('effnet_gem', cache, 'auto', precision='bf16').identity()
    assert f32['config']['precision'] == 'f32'
    assert compatibility_problems(f32, bf16) == ["config precision: map 'f32' vs requested 'bf16'"]
    legacy = {**f32, 'config': {k: v for k, v in f32['config'].items() if k != 'precision'}}
    assert compatibility_problems(legacy, f32) == []
    assert compatibility_problems(legacy, bf16) != []
    for key in ('runtime', 'device', 'runtime_cache'):
        assert key not in f32['config']


@pytest.mark.skipif(not openvino_bf16_supported(), reason='this CPU has no bf16 support')
def test_bf16_is_close_to_f32(cache: str, images) -> None:
    f32 = make('effnet_gem', cache, 'openvino').encode(images)
    bf16 = make('effnet_gem', cache, 'auto', precision='bf16')
    got = bf16.encode(images)
    assert bf16.runtimes() == {'effnet_gem': 'openvino'}
    assert np.min(np.sum(got * f32, axis=1)) > 0.99  # cosine similarity of unit rows
    assert np.max(np.abs(got - f32)) > 0  # really another precision


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_int8_is_calibrated_on_map_images_and_rebuilt_from_the_map_state(runtime: str, cache: str, images,
                                                                         map_images, tmp_path) -> None:
    f32 = make('anyloc_vlad', cache, 'torch')
    f32.fit(map_images)
    encoder = make('anyloc_vlad', str(tmp_path), runtime, precision='int8')
    assert encoder.requires_fit and not encoder.is_fitted
    encoder.fit(map_images)
    state = encoder.get_state()
    assert 'int8.dense_efficientnet_lite0' in state and encoder.is_fitted
    got = encoder.encode(images)
    assert encoder.runtimes() == {'dense_efficientnet_lite0': runtime}
    # another process: the int8 graph rebuilt (empty cache) from the ranges the map stores
    again = make('anyloc_vlad', str(tmp_path / 'fresh'), runtime, state, precision='int8')
    np.testing.assert_allclose(again.encode(images), got, atol=1e-4, rtol=0)
    # int8 changes the dense features only a little (same vocabulary: compare the features)
    a, b = f32.dense.extract(images), encoder.dense.extract(images)
    assert np.mean(np.sum(a * b, axis=-1)) > 0.9


def test_cuda_without_a_gpu_is_a_clear_error(cache: str, images) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip('a GPU is present: test_cuda_matches_cpu covers it')
    with pytest.raises(settings.RuntimeUnavailable, match='device cuda: torch sees no CUDA GPU'):
        make('effnet_gem', cache, 'torch', device='cuda').encode(images[:1])
    with pytest.raises(settings.RuntimeUnavailable, match='device cuda: this onnxruntime has no CUDA'):
        make('effnet_gem', cache, 'onnxruntime', device='cuda').encode(images[:1])


def test_cuda_matches_cpu(cache: str, images) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip('no GPU on this machine')
    cpu = make('effnet_gem', cache, 'torch').encode(images)
    gpu = make('effnet_gem', cache, 'auto', device='cuda')
    np.testing.assert_allclose(gpu.encode(images), cpu, atol=1e-4, rtol=0)

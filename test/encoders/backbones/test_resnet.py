"""ResNet: torchvision checkpoint layout (test/checkpoint_layouts.py, no torchvision or network), strict
loading and its errors, output shapes, cropping and freezing."""
from __future__ import annotations

import pytest
import torch

from test.checkpoint_layouts import fill, torchvision_resnet
from vpr_ros.encoders.backbones.resnet import ResNet, fill_batchnorm_counters, load_torchvision_resnet
from vpr_ros.encoders.weights import load_strict, read_state_dict
from vpr_ros.errors import WeightsError

torch.set_num_threads(2)


@pytest.mark.parametrize('depth, n_keys, n_params', [(18, 122, 11_689_512), (50, 320, 25_557_032)])
def test_layout_matches_torchvision(depth: int, n_keys: int, n_params: int) -> None:
    layout = torchvision_resnet(depth, fc=True)
    assert len(layout) == n_keys
    model = ResNet(depth, crop='layer3')  # cropped but complete, so the full file still fits
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert sum(p.numel() for p in model.parameters()) == n_params  # torchvision's published counts
    state = fill(layout)
    load_strict(model, state, f'resnet{depth}.pth')
    assert torch.equal(model.layer4[-1].bn2.running_var, state['layer4.1.bn2.running_var' if depth == 18
                                                               else 'layer4.2.bn2.running_var'])


def test_representative_keys() -> None:
    r50 = {k: tuple(v.shape) for k, v in ResNet(50).state_dict().items()}
    assert r50['layer1.0.downsample.0.weight'] == (256, 64, 1, 1)
    assert r50['layer3.5.conv3.weight'] == (1024, 256, 1, 1)
    assert r50['layer4.0.downsample.1.running_var'] == (2048,)
    assert r50['fc.weight'] == (1000, 2048)
    r18 = {k: tuple(v.shape) for k, v in ResNet(18).state_dict().items()}
    assert 'layer1.0.downsample.0.weight' not in r18
    assert r18['layer2.0.downsample.0.weight'] == (128, 64, 1, 1)
    assert r18['layer4.1.conv2.weight'] == (512, 512, 3, 3)
    assert r18['fc.weight'] == (1000, 512)


def test_bottleneck_stride_on_3x3() -> None:
    block = ResNet(50).layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # torchvision v1.5
    assert block.downsample[0].stride == (2, 2)


# The file path for ResNet-18 only: ResNet-50's layout is checked above, its 100 MB file adds nothing.
@pytest.mark.parametrize('depth, crop', [(18, 'layer4')])
def test_file_round_trip_and_torchvision_counterless_file(tmp_path, depth: int, crop: str) -> None:
    layout = torchvision_resnet(depth, fc=True)
    state = fill(layout)
    full = tmp_path / f'resnet{depth}.pth'
    torch.save(state, full)
    a, b = ResNet(depth, crop=crop).eval(), ResNet(depth, crop=crop).eval()
    load_strict(a, read_state_dict(str(full)), str(full))
    load_strict(b, read_state_dict(str(full)), str(full))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.equal(a.logits(x), b.logits(x))
    # torchvision's released files predate the num_batches_tracked buffer.
    legacy = tmp_path / 'legacy.pth'
    torch.save({k: v for k, v in state.items() if not k.endswith('num_batches_tracked')}, legacy)
    with pytest.raises(WeightsError, match='num_batches_tracked'):
        load_strict(ResNet(depth, crop=crop), read_state_dict(str(legacy)), str(legacy))
    c = ResNet(depth, crop=crop).eval()
    load_torchvision_resnet(c, str(legacy))
    with torch.no_grad():
        assert torch.equal(c(x), a(x))


def test_counter_filling_does_not_hide_missing_batchnorm() -> None:
    model = ResNet(18)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('layer1.0.bn1.')}
    filled = fill_batchnorm_counters(model, state)
    assert 'layer1.0.bn1.num_batches_tracked' not in filled
    with pytest.raises(WeightsError, match='layer1.0.bn1.running_mean'):
        load_strict(model, filled, 'x.pth')


def test_truncated_file_raises(tmp_path) -> None:
    path = tmp_path / 'r18.pth'
    torch.save(ResNet(18).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match='cannot read weights'):
        read_state_dict(str(path))


def test_missing_and_extra_key_both_listed(tmp_path) -> None:
    state = ResNet(18).state_dict()
    del state['layer3.1.bn2.bias']
    state['layer3.1.bn2.extra'] = torch.zeros(3)
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        load_strict(ResNet(18), read_state_dict(str(path)), str(path))
    assert 'layer3.1.bn2.bias' in str(err.value) and 'layer3.1.bn2.extra' in str(err.value)


def test_shape_mismatch_listed() -> None:
    state = ResNet(18).state_dict()
    state['fc.weight'] = torch.zeros(10, 512)
    with pytest.raises(WeightsError, match=r'fc.weight: file \(10, 512\) vs model \(1000, 512\)'):
        load_strict(ResNet(18), state, 'x.pth')


def test_r50_layer3_output_shape() -> None:
    model = ResNet(50, crop='layer3').eval()
    assert (model.out_channels, model.stride) == (1024, 16)
    with torch.no_grad():
        y = model.features(torch.randn(1, 3, 320, 320))
    assert y.shape == (1, 1024, 20, 20)
    assert (ResNet(50).out_channels, ResNet(50).stride) == (2048, 32)
    assert ResNet(18, crop='layer3').out_channels == 256 and ResNet(18).out_channels == 512


def test_r18_layer4_output_shape() -> None:
    with torch.no_grad():
        assert ResNet(18).eval()(torch.randn(2, 3, 64, 96)).shape == (2, 512, 2, 3)


def test_partial_build_loads_cropped_checkpoint() -> None:
    full = ResNet(18, crop='layer3')
    part = ResNet(18, crop='layer3', full=False)
    assert not hasattr(part, 'layer4') and not hasattr(part, 'fc')
    cropped = {k: v for k, v in full.state_dict().items() if not k.startswith(('layer4.', 'fc.'))}
    assert set(cropped) == set(part.state_dict())
    load_strict(part, cropped, 'cropped.pth')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(part.eval()(x), full.eval()(x))
    with pytest.raises(RuntimeError, match='full=True'):
        part.logits(x)


def test_trainable_from() -> None:
    model = ResNet(18, crop='layer3')
    model.trainable_from('layer3')
    trainable = {k.split('.')[0] for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'layer3', 'layer4', 'fc'}
    model.trainable_from('conv1')
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match='unknown ResNet stage'):
        model.trainable_from('layer5')


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match='depth'):
        ResNet(26)
    with pytest.raises(ValueError, match='crop'):
        ResNet(50, crop='layer2')

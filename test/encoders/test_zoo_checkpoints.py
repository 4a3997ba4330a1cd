"""Released checkpoints load strictly: fake checkpoints are built from the official key layouts.

The layouts are generated independently of the package (torchvision ResNet names and DINOv2 hub
names in test/checkpoint_layouts.py, each repository's wrapper names here), checked against
hard-coded representative official keys and the key counts derived from the architectures, filled
with random values, saved, loaded through ``weights: PATH`` and round-tripped (model state saved
again -> identical descriptors).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test.checkpoint_layouts import dinov2_hub, fill, torchvision_resnet
from vpr_ros.encoders import create_encoder
from vpr_ros.errors import WeightsError

# ----- official layouts, written from the architecture facts -------------------------------------
SEQ_NAMES = {'conv1': '0', 'bn1': '1', 'layer1': '4', 'layer2': '5', 'layer3': '6', 'layer4': '7'}


def mha(prefix: str, d: int) -> dict:
    return {f'{prefix}.in_proj_weight': (3 * d, d), f'{prefix}.in_proj_bias': (3 * d,),
            f'{prefix}.out_proj.weight': (d, d), f'{prefix}.out_proj.bias': (d,)}


def ln(prefix: str, d: int) -> dict:
    return {f'{prefix}.weight': (d,), f'{prefix}.bias': (d,)}


def boq_aggregator(cin: int, d: int, m: int = 64, layers: int = 2, rows: int = 32) -> dict:
    out = {'aggregator.proj_c.weight': (d, cin, 3, 3), 'aggregator.proj_c.bias': (d,),
           **ln('aggregator.norm_input', d)}
    for i in range(layers):
        b = f'aggregator.boqs.{i}'
        out |= {**mha(f'{b}.encoder.self_attn', d), f'{b}.encoder.linear1.weight': (4 * d, d),
                f'{b}.encoder.linear1.bias': (4 * d,), f'{b}.encoder.linear2.weight': (d, 4 * d),
                f'{b}.encoder.linear2.bias': (d,), **ln(f'{b}.encoder.norm1', d),
                **ln(f'{b}.encoder.norm2', d),
                f'{b}.queries': (1, m, d), **mha(f'{b}.self_attn', d), **ln(f'{b}.norm_q', d),
                **mha(f'{b}.cross_attn', d), **ln(f'{b}.norm_out', d)}
    return out | {'aggregator.fc.weight': (rows, layers * m), 'aggregator.fc.bias': (rows,)}


def mixvpr_aggregator(channels: int, rows: int, hw: int = 400, depth: int = 4) -> dict:
    out = {}
    for i in range(depth):
        p = f'aggregator.mix.{i}.mix'
        out |= {**ln(f'{p}.0', hw), f'{p}.1.weight': (hw, hw), f'{p}.1.bias': (hw,),
                f'{p}.3.weight': (hw, hw), f'{p}.3.bias': (hw,)}
    return out | {'aggregator.channel_proj.weight': (channels, 1024),
                  'aggregator.channel_proj.bias': (channels,),
                  'aggregator.row_proj.weight': (rows, hw), 'aggregator.row_proj.bias': (rows,)}


def salad_aggregator() -> dict:
    out = {}
    for name, shapes in (('token_features.0', ((512, 768), (512,))),
                         ('token_features.2', ((256, 512), (256,))),
                         ('cluster_features.0', ((512, 768, 1, 1), (512,))),
                         ('cluster_features.3', ((128, 512, 1, 1), (128,))),
                         ('score.0', ((512, 768, 1, 1), (512,))), ('score.3', ((64, 512, 1, 1), (64,)))):
        out |= {f'aggregator.{name}.weight': shapes[0], f'aggregator.{name}.bias': shapes[1]}
    return out | {'aggregator.dust_bin': ()}


def megaloc_aggregator() -> dict:
    # megaloc_model.py: Aggregator(agg=SALAD(768, 64 clusters, cluster_dim 256, token_dim 256, mlp_dim 512),
    # linear=Linear(64 * 256 + 256 -> 8448))
    out = {}
    for name, shapes in (('token_features.0', ((512, 768), (512,))),
                         ('token_features.2', ((256, 512), (256,))),
                         ('cluster_features.0', ((512, 768, 1, 1), (512,))),
                         ('cluster_features.3', ((256, 512, 1, 1), (256,))),
                         ('score.0', ((512, 768, 1, 1), (512,))), ('score.3', ((64, 512, 1, 1), (64,)))):
        out |= {f'aggregator.agg.{name}.weight': shapes[0], f'aggregator.agg.{name}.bias': shapes[1]}
    return out | {'aggregator.agg.dust_bin': (), 'aggregator.linear.weight': (8448, 16640),
                  'aggregator.linear.bias': (8448,)}


def prefixed(layout: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in layout.items()}


RELEASES = {
    'boq_resnet50_16384': (
        'boq', {'backbone': 'resnet50'},
        lambda: prefixed(torchvision_resnet(50, 3, SEQ_NAMES), 'backbone.net.') | boq_aggregator(1024, 512),
        314, {'backbone.net.0.weight': (64, 3, 7, 7), 'backbone.net.1.running_var': (64,),
              'backbone.net.4.0.downsample.0.weight': (256, 64, 1, 1),
              'backbone.net.6.5.conv3.weight': (1024, 256, 1, 1),
              'aggregator.proj_c.weight': (512, 1024, 3, 3), 'aggregator.boqs.1.queries': (1, 64, 512),
              'aggregator.boqs.0.encoder.self_attn.in_proj_weight': (1536, 512),
              'aggregator.boqs.0.encoder.linear1.weight': (2048, 512), 'aggregator.fc.weight': (32, 128)},
        16384, [112, 112]),
    'boq_dinov2_12288': (
        'boq', {'backbone': 'dinov2_vitb14'},
        lambda: dinov2_hub(768, prefix='backbone.dino.') | boq_aggregator(768, 384),
        231, {'backbone.dino.pos_embed': (1, 1370, 768), 'backbone.dino.mask_token': (1, 768),
              'backbone.dino.blocks.11.attn.qkv.weight': (2304, 768),
              'backbone.dino.blocks.0.ls1.gamma': (768,),
              'backbone.dino.norm.weight': (768,), 'aggregator.proj_c.weight': (384, 768, 3, 3),
              'aggregator.boqs.0.cross_attn.in_proj_weight': (1152, 384), 'aggregator.fc.bias': (32,)},
        12288, [28, 28]),
    'mixvpr_4096': (
        'mixvpr', {'out_dim': 4096},
        lambda: prefixed(torchvision_resnet(50, 3), 'backbone.model.') | mixvpr_aggregator(1024, 4),
        286, {'backbone.model.conv1.weight': (64, 3, 7, 7),
              'backbone.model.layer3.0.downsample.1.weight': (1024,),
              'aggregator.mix.3.mix.1.weight': (400, 400), 'aggregator.mix.0.mix.0.bias': (400,),
              'aggregator.channel_proj.weight': (1024, 1024), 'aggregator.row_proj.weight': (4, 400)},
        4096, None),
    'convap_8192': (
        'convap', {'out_dim': 8192},
        lambda: prefixed(torchvision_resnet(50, 4), 'backbone.model.')
        | {'aggregator.channel_pool.weight': (2048, 2048, 1, 1), 'aggregator.channel_pool.bias': (2048,)},
        320, {'backbone.model.layer4.2.bn3.weight': (2048,),
              'aggregator.channel_pool.weight': (2048, 2048, 1, 1)},
        8192, [64, 64]),
    'salad_8448': (
        'salad', {},
        lambda: dinov2_hub(768, prefix='backbone.model.') | salad_aggregator(),
        188, {'backbone.model.blocks.5.mlp.fc1.weight': (3072, 768),
              'aggregator.token_features.2.weight': (256, 512),
              'aggregator.cluster_features.3.weight': (128, 512, 1, 1), 'aggregator.score.3.bias': (64,),
              'aggregator.dust_bin': ()},
        8448, [126, 126]),
    'megaloc_8448': (
        'megaloc', {},
        lambda: dinov2_hub(768, prefix='backbone.model.') | megaloc_aggregator(),
        190, {'backbone.model.cls_token': (1, 1, 768), 'backbone.model.blocks.11.ls2.gamma': (768,),
              'aggregator.agg.cluster_features.3.weight': (256, 512, 1, 1), 'aggregator.agg.dust_bin': (),
              'aggregator.linear.weight': (8448, 16640)},
        8448, [126, 126]),
    'cosplace_resnet50_2048': (
        'cosplace', {'backbone': 'resnet50', 'out_dim': 2048},
        lambda: prefixed(torchvision_resnet(50, 4, SEQ_NAMES), 'backbone.')
        | {'aggregation.1.p': (1,), 'aggregation.3.weight': (2048, 2048), 'aggregation.3.bias': (2048,)},
        321, {'backbone.7.0.downsample.0.weight': (2048, 1024, 1, 1), 'aggregation.1.p': (1,),
              'aggregation.3.weight': (2048, 2048)},
        2048, [64, 64]),
    # EigenPlaces (ICCV 2023) ships CosPlace's GeoLocalizationNet layout: ``encoder cosplace`` loads it.
    'eigenplaces_resnet101_2048': (
        'cosplace', {'backbone': 'resnet101', 'out_dim': 2048},
        lambda: prefixed(torchvision_resnet(101, 4, SEQ_NAMES), 'backbone.')
        | {'aggregation.1.p': (1,), 'aggregation.3.weight': (2048, 2048), 'aggregation.3.bias': (2048,)},
        627, {'backbone.6.22.conv3.weight': (1024, 256, 1, 1), 'backbone.7.2.conv3.weight': (2048, 512, 1, 1),
              'aggregation.3.bias': (2048,)},
        2048, [64, 64]),
    'cosplace_resnet18_512': (
        'cosplace', {'backbone': 'resnet18', 'out_dim': 512},
        lambda: prefixed(torchvision_resnet(18, 4, SEQ_NAMES), 'backbone.')
        | {'aggregation.1.p': (1,), 'aggregation.3.weight': (512, 512), 'aggregation.3.bias': (512,)},
        123, {'backbone.4.1.conv2.weight': (64, 64, 3, 3),
              'backbone.5.0.downsample.0.weight': (128, 64, 1, 1),
              'aggregation.3.weight': (512, 512)},
        512, [64, 64]),
    'netvlad_dvgl_resnet50conv4': (
        'netvlad', {'backbone': 'resnet50', 'crop': 'layer3', 'clusters': 64},
        lambda: prefixed(prefixed(torchvision_resnet(50, 3, SEQ_NAMES), 'backbone.')
                         | {'aggregation.centroids': (64, 1024),
                            'aggregation.conv.weight': (64, 1024, 1, 1)}, 'module.'),
        260, {'module.backbone.6.0.conv1.weight': (256, 512, 1, 1),
              'module.aggregation.centroids': (64, 1024),
              'module.aggregation.conv.weight': (64, 1024, 1, 1)},
        65536, [64, 64]),
    'gem_dvgl_resnet50conv4': (
        'gem', {'backbone': 'resnet50', 'crop': 'layer3', 'l2_before_pool': True},
        lambda: prefixed(prefixed(torchvision_resnet(50, 3, SEQ_NAMES), 'backbone.')
                         | {'aggregation.1.p': (1,)}, 'module.'),
        259, {'module.backbone.5.3.bn2.running_mean': (128,), 'module.aggregation.1.p': (1,)},
        1024, [64, 64]),
}


@pytest.fixture(scope='module')
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]


@pytest.mark.parametrize('release', sorted(RELEASES))
def test_release_layout_loads_strictly_and_round_trips(release, tmp_path, images):
    name, config, layout_fn, count, representative, dim, size = RELEASES[release]
    layout = layout_fn()
    assert len(layout) == count
    for key, shape in representative.items():
        assert layout[key] == shape, key
    state = fill(layout)
    ckpt = tmp_path / f'{release}.pth'
    # netvlad/gem: the benchmark's training checkpoint; convap: Lightning-style; others: a plain state dict
    if name in ('netvlad', 'gem'):
        torch.save({'epoch_num': 3, 'model_state_dict': state, 'best_r5': 90.1}, ckpt)
    elif name == 'convap':
        torch.save({'state_dict': state, 'epoch': 9}, ckpt)
    else:
        torch.save(state, ckpt)
    cfg = {**config, 'weights': str(ckpt), 'threads': 2}  # one fixed count: the round trip is bit for bit
    if size is not None:
        cfg['image_size'] = size
    enc = create_encoder(name, cfg)
    assert enc.dim == dim
    model_state = enc.model.state_dict()
    for key, value in state.items():
        own = key[len('module.'):] if key.startswith('module.') else key
        assert torch.equal(model_state[own], value), key
    d1 = enc.encode(images)
    assert d1.shape == (2, dim) and np.isfinite(d1).all()
    np.testing.assert_allclose(np.linalg.norm(d1, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(d1[0], d1[1])

    again = tmp_path / 'again.pth'
    torch.save(enc.model.state_dict(), again)
    enc2 = create_encoder(name, {**cfg, 'weights': str(again)})
    np.testing.assert_array_equal(enc2.encode(images), d1)
    assert enc.weights_fingerprint().startswith('sha256:')


@pytest.mark.parametrize('out_dim,channels,rows', [(512, 256, 2), (128, 64, 2)])
def test_mixvpr_small_releases_load(out_dim, channels, rows, tmp_path):
    layout = prefixed(torchvision_resnet(50, 3), 'backbone.model.') | mixvpr_aggregator(channels, rows)
    assert len(layout) == 286
    path = tmp_path / 'mix.ckpt'
    torch.save(fill(layout), path)
    assert create_encoder('mixvpr', {'out_dim': out_dim, 'weights': str(path)}).dim == out_dim


def test_wrong_key_is_reported(tmp_path):
    layout = prefixed(torchvision_resnet(50, 3, SEQ_NAMES), 'backbone.net.') | boq_aggregator(1024, 512)
    state = fill(layout)
    state['aggregator.fc.kernel'] = state.pop('aggregator.fc.weight')
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys \[aggregator\.fc\.weight\]"
                                           r".*unexpected keys \[aggregator\.fc\.kernel\]"):
        create_encoder('boq', {'weights': str(path)})


def test_wrong_shape_is_reported(tmp_path):
    # The released MixVPR fits a 20x20 map (320x320 input): another image size cannot load it.
    layout = prefixed(torchvision_resnet(50, 3), 'backbone.model.') | mixvpr_aggregator(1024, 4)
    path = tmp_path / 'mix.ckpt'
    torch.save(fill(layout), path)
    with pytest.raises(WeightsError, match=r'shape mismatches \[aggregator\.mix\.0\.mix\.0\.bias: '
                                           r'file \(400,\) vs model \(324,\)'):
        create_encoder('mixvpr', {'weights': str(path), 'image_size': [288, 288]})


def test_torchvision_backbone_weights(tmp_path, images, caplog):
    """An old-style torchvision file (layer4 + fc, no num_batches_tracked) feeds BoQ's cropped ResNet."""
    layout = torchvision_resnet(50, 4, fc=True)
    state = {k: v for k, v in fill(layout).items() if not k.endswith('num_batches_tracked')}
    path = tmp_path / 'resnet50-imagenet.pth'
    torch.save(state, path)
    enc = create_encoder('boq', {'backbone_weights': str(path), 'image_size': [64, 64]})
    own = enc.model.state_dict()
    assert torch.equal(own['backbone.net.6.5.conv3.weight'], state['layer3.5.conv3.weight'])
    assert torch.equal(own['backbone.net.1.running_var'], state['bn1.running_var'])
    assert not any('layer4' in k or 'fc.' in k for k in own if k.startswith('backbone'))
    assert 'random initialisation' not in caplog.text
    assert enc.encode(images[:1]).shape == (1, 16384)


def test_dinov2_backbone_weights(tmp_path):
    layout = dinov2_hub(768)
    state = fill(layout)
    path = tmp_path / 'dinov2_vitb14_pretrain.pth'
    torch.save(state, path)
    enc = create_encoder('salad', {'backbone_weights': str(path), 'image_size': [126, 126]})
    assert torch.equal(enc.model.state_dict()['backbone.model.blocks.7.attn.qkv.bias'],
                       state['blocks.7.attn.qkv.bias'])


def test_random_init_warns_and_is_reproducible(caplog, images):
    with caplog.at_level('WARNING', logger='vpr_ros.encoders'):
        a = create_encoder('gem', {'image_size': [64, 64], 'threads': 2})  # fixed: compared bit for bit
    assert 'random initialisation' in caplog.text
    b = create_encoder('gem', {'image_size': [64, 64], 'threads': 2})
    np.testing.assert_array_equal(a.encode(images), b.encode(images))
    assert a.weights_fingerprint() == b.weights_fingerprint()


# ----- MegaLoc: both official layouts -------------------------------------------------------------
def megaloc_v1() -> dict:
    """``megaloc.torch`` (GitHub release v1.0): the DINOv2 hub model under ``backbone.model``."""
    return dinov2_hub(768, prefix='backbone.model.') | megaloc_aggregator()


def megaloc_hf() -> dict:
    """``model.safetensors`` (Hugging Face gberton/MegaLoc, 2026-01): the release's own DINOv2 copy
    directly under ``backbone`` (``backbone.blocks.<i>...``), no ``mask_token``; same aggregator."""
    return dinov2_hub(768, prefix='backbone.', mask_token=False) | megaloc_aggregator()


def test_megaloc_layouts_are_the_releases():
    v1, hf = megaloc_v1(), megaloc_hf()
    assert (len(v1), len(hf)) == (190, 189)
    assert hf['backbone.blocks.11.mlp.fc2.weight'] == (768, 3072)
    assert hf['backbone.pos_embed'] == (1, 1370, 768)
    assert hf['backbone.patch_embed.proj.weight'] == (768, 3, 14, 14)
    assert 'backbone.mask_token' not in hf and v1['backbone.model.mask_token'] == (1, 768)
    assert {k for k in hf if k.startswith('aggregator.')} == {k for k in v1 if k.startswith('aggregator.')}


@pytest.fixture(scope='module')
def megaloc_images():
    rng = np.random.default_rng(3)  # 126x126 after rounding: 81 patches, more than SALAD's 64 clusters
    return [rng.integers(0, 256, (120, 130, 3), dtype=np.uint8) for _ in range(2)]


def test_megaloc_hf_safetensors_and_v1_torch_give_one_model(tmp_path, megaloc_images):
    from safetensors.torch import save_file

    v1_state = fill(megaloc_v1(), seed=5)
    hf_state = {k: v1_state['backbone.model.' + k[len('backbone.'):] if k.startswith('backbone.') else k]
                for k in megaloc_hf()}
    torch.save(v1_state, tmp_path / 'megaloc.torch')
    save_file(hf_state, str(tmp_path / 'model.safetensors'))
    cfg = {'threads': 2}
    v1 = create_encoder('megaloc', {**cfg, 'weights': str(tmp_path / 'megaloc.torch')})
    hf = create_encoder('megaloc', {**cfg, 'weights': str(tmp_path / 'model.safetensors')})
    own = hf.model.state_dict()
    assert torch.equal(own['backbone.model.blocks.4.attn.qkv.weight'],
                       hf_state['backbone.blocks.4.attn.qkv.weight'])
    assert torch.equal(own['aggregator.linear.weight'], hf_state['aggregator.linear.weight'])
    assert not own['backbone.model.mask_token'].any()  # absent from the HF file; unused at inference
    d_v1, d_hf = v1.encode(megaloc_images), hf.encode(megaloc_images)
    assert not np.allclose(d_v1[0], d_v1[1])
    np.testing.assert_allclose(d_hf, d_v1, rtol=0, atol=1e-6)  # one computation, one thread count


def test_megaloc_hf_file_missing_a_key_is_refused(tmp_path):
    from safetensors.torch import save_file

    state = fill(megaloc_hf())
    del state['backbone.blocks.3.ls1.gamma']
    save_file(state, str(tmp_path / 'model.safetensors'))
    with pytest.raises(WeightsError, match=r'missing keys \[backbone\.model\.blocks\.3\.ls1\.gamma\]'):
        create_encoder('megaloc', {'weights': str(tmp_path / 'model.safetensors')})


def test_megaloc_hf_layout_with_a_mask_token_is_refused(tmp_path):
    from safetensors.torch import save_file

    state = fill(megaloc_hf() | {'backbone.mask_token': (1, 768)})
    save_file(state, str(tmp_path / 'model.safetensors'))
    with pytest.raises(WeightsError, match='not an official MegaLoc'):
        create_encoder('megaloc', {'weights': str(tmp_path / 'model.safetensors')})


def test_safetensors_is_read_for_any_encoder_by_name_or_content(tmp_path, images):
    from safetensors.torch import save_file

    layout = prefixed(torchvision_resnet(18, 4, SEQ_NAMES), 'backbone.') | {
        'aggregation.1.p': (1,), 'aggregation.3.weight': (512, 512), 'aggregation.3.bias': (512,)}
    state = fill(layout)
    cfg = {'backbone': 'resnet18', 'out_dim': 512, 'image_size': [64, 64], 'threads': 2}
    torch.save(state, tmp_path / 'r18.pth')
    want = create_encoder('cosplace', {**cfg, 'weights': str(tmp_path / 'r18.pth')}).encode(images)
    for name in ('r18.safetensors', 'r18_renamed.pth'):  # found by the suffix, then by the header
        save_file(state, str(tmp_path / name))
        got = create_encoder('cosplace', {**cfg, 'weights': str(tmp_path / name)}).encode(images)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    (tmp_path / 'cut.safetensors').write_bytes((tmp_path / 'r18.safetensors').read_bytes()[:5000])
    with pytest.raises(WeightsError, match='cannot read weights'):
        create_encoder('cosplace', {**cfg, 'weights': str(tmp_path / 'cut.safetensors')})

"""End to end on a tiny sample world: train -> the checkpoint loads strictly -> build-map -> evaluate.

Two sessions (the sunny mapping drive and the autumn-evening query drive) train a MixVPR head on
the frozen EfficientNet-Lite0; the query drive is then localised against a map of the mapping
drive, with the trained head and with the untrained (seeded random) head. This checks the
plumbing and that training helps on data it has seen; generalisation to unseen places is what
benchmarks/bench_train.py measures.
"""
import json

import numpy as np
import pytest
import torch
import yaml

from vpr_ros.cli import main
from vpr_ros.encoders import create_encoder
from vpr_ros.encoders.weights import file_fingerprint
from vpr_ros.sample import generate_sample

SMALL = ['--set', 'out_dim=512', '--set', 'image_size=[120,160]']


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp('train_world')
    info = generate_sample(str(out), scale=0.15, traversals=('mapping', 'query'), progress=False)
    return info.bags


def _recall(tmp, name, bags, extra):
    assert main(['build-map', '--source', bags['mapping'], '--out', str(tmp / f'map_{name}'),
                 '--encoder', 'mixvpr', '--no-thumbnails', *SMALL, *extra]) == 0
    # 5 m positives: at 25 m a third of this tiny loop would count as the right place
    assert main(['evaluate', '--map', str(tmp / f'map_{name}'), '--queries', bags['query'], '--dist', '5',
                 '--out', str(tmp / f'eval_{name}')]) == 0
    with open(tmp / f'eval_{name}' / 'results.json', encoding='utf-8') as fh:
        results = json.load(fh)
    return results['retrieval']['recall']['R@1'], results['encoder']['weights_fingerprint']


def test_train_then_map_then_evaluate(world, tmp_path, capsys):
    torch.set_num_threads(2)
    run = tmp_path / 'run'
    assert main(['train', '--source', world['mapping'], '--source', world['query'], '--encoder', 'mixvpr',
                 '--out', str(run), *SMALL, '--epochs', '6', '--set', 'places_per_batch=8',
                 '--set', 'augment_copies=2', '--set', 'lr=1e-3']) == 0
    out = capsys.readouterr().out
    assert 'validation R@1' in out and 'encoder.yaml' in out
    report = yaml.safe_load((run / 'train.yaml').read_text())
    assert report['data']['sessions'] == ['mapping', 'query']
    assert report['data']['frame_ids'] == ['map', 'map']
    assert [h['epoch'] for h in report['history']] == list(range(7))
    assert report['data']['validation']['queries'] > 0 and report['data']['places'] >= 4
    assert (run / 'training_curve.png').stat().st_size > 1000
    best = run / 'best.pth'
    assert report['encoder']['weights_fingerprint'] == file_fingerprint(str(best))

    # strict load through `weights:` alone (the EfficientNet backbone is recognised from the keys)
    enc = create_encoder('mixvpr', {'weights': str(best), 'out_dim': 512, 'image_size': [120, 160]})
    assert enc.config['backbone'] == 'efficientnet_lite0'
    state = torch.load(best, weights_only=True)
    assert set(state) == set(enc.model.state_dict())

    trained, fingerprint = _recall(tmp_path, 'trained', world, ['--set', f'weights={best}'])
    untrained, _ = _recall(tmp_path, 'untrained', world, ['--set', 'backbone=efficientnet_lite0'])
    assert fingerprint == report['encoder']['weights_fingerprint']
    assert trained > untrained, (trained, untrained)


def test_resume_continues_and_refuses_changes(world, tmp_path):
    run = tmp_path / 'run'
    args = ['train', '--source', world['mapping'], '--encoder', 'netvlad', '--out', str(run),
            '--set', 'clusters=8', '--set', 'image_size=[120,160]', '--set', 'places_per_batch=4',
            '--set', 'augment_copies=1']
    assert main([*args, '--epochs', '1']) == 0
    first = yaml.safe_load((run / 'train.yaml').read_text())
    assert first['data']['validation']['how'].startswith('revisits')  # one session: the lap's overlap
    assert main(args + ['--epochs', '1']) == 2  # not empty, no --resume
    assert main([*args, '--epochs', '2', '--resume']) == 0
    second = yaml.safe_load((run / 'train.yaml').read_text())
    assert [h['epoch'] for h in second['history']] == [0, 1, 2]
    assert second['history'][1] == first['history'][1]
    assert main([*args, '--epochs', '3', '--resume', '--pos-dist', '8']) == 2
    cfg = {'weights': str(run / 'best.pth'), 'clusters': 8, 'image_size': [120, 160]}
    enc = create_encoder('netvlad', cfg)
    assert not enc.requires_fit  # the clusters come from the training images, stored in the checkpoint
    rgb = np.zeros((120, 160, 3), np.uint8)
    assert enc.encode([rgb]).shape == (1, 8 * 112)


def test_train_blocks_fine_tunes_the_last_backbone_blocks_only(world, tmp_path):
    run = tmp_path / 'run'
    args = ['train', '--source', world['mapping'], '--encoder', 'netvlad', '--out', str(run),
            '--set', 'clusters=8', '--set', 'image_size=[120,160]', '--set', 'places_per_batch=4',
            '--set', 'augment_copies=1', '--set', 'train_blocks=2', '--set', 'lr=1e-3', '--epochs', '2']
    assert main(args) == 0
    report = yaml.safe_load((run / 'train.yaml').read_text())
    assert report['best']['epoch'] >= 1  # otherwise best.pth would be the untouched backbone
    trained = torch.load(run / 'best.pth', weights_only=True)
    imagenet = create_encoder('netvlad', {'clusters': 8, 'image_size': [120, 160],
                                          'backbone': 'efficientnet_lite0'}).model.state_dict()
    assert set(trained) == set(imagenet)  # the encoder's own layout: loads strictly through weights:
    changed = {k.split('.')[3] for k in trained if k.startswith('backbone.model._blocks.')
               and trained[k].is_floating_point() and not torch.equal(trained[k], imagenet[k])}
    assert changed == {'9', '10'}, changed  # Lite0's stride-16 trunk ends at block 10
    stem = 'backbone.model._conv_stem.weight'
    assert torch.equal(trained[stem], imagenet[stem])
    # BatchNorm statistics stay ImageNet's (trainable blocks run in eval mode)
    assert torch.equal(trained['backbone.model._blocks.10._bn1.running_mean'],
                       imagenet['backbone.model._blocks.10._bn1.running_mean'])
    enc = create_encoder('netvlad', {'weights': str(run / 'best.pth'), 'clusters': 8,
                                     'image_size': [120, 160]})
    assert enc.encode([np.zeros((120, 160, 3), np.uint8)]).shape == (1, 8 * 112)


def test_train_blocks_on_a_backbone_without_a_split_is_refused(world, tmp_path):
    args = ['train', '--source', world['mapping'], '--encoder', 'netvlad', '--out', str(tmp_path / 'run'),
            '--set', 'backbone=resnet18', '--set', 'clusters=8', '--set', 'train_blocks=1']
    assert main(args) == 2


def test_progress_false_prints_no_bars(world, tmp_path, capfd):
    from vpr_ros.training.trainer import train

    settings = {'epochs': 1, 'clusters': 8, 'image_size': [120, 160], 'places_per_batch': 4,
                'augment_copies': 1}
    train([world['mapping']], 'netvlad', str(tmp_path / 'run'), settings, progress=False)
    err = capfd.readouterr().err
    assert 'caching backbone features' not in err and 'epoch 1/1' not in err

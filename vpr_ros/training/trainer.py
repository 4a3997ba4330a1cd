"""``vpr-ros train``: train a zoo encoder's head on the user's own sessions, CPU-first.

The backbone stays frozen, or all but its last ``train_blocks`` blocks (EfficientNet trunks); the
frozen part's outputs are computed once (with augmented copies) into a memory-mapped cache
(cache.py), so an epoch only runs the trainable blocks and the head. Places and batches come from the
poses (places.py); the loss is the multi-similarity loss with its miner by default (losses.py).
Each epoch ends with Recall@1/5 on a held-out stretch of the route; the best epoch's model is
written as ``RUN_DIR/best.pth`` - the full model's state dict in the encoder's own layout, so
``--set weights=RUN_DIR/best.pth`` (or ``--config RUN_DIR/encoder.yaml``) loads it strictly and the
map's weights fingerprint (the file's sha256) names exactly these weights.

Run directory: ``best.pth``, ``last.pth`` (model + optimiser + epoch, for ``--resume``),
``encoder.yaml`` (the encoder config to build maps with), ``train.yaml`` (data, settings, per-epoch
history, best recall), ``history.json``, ``training_curve.png`` and ``cache/``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from vpr_ros.encoders import create_encoder
from vpr_ros.encoders._zoo import ZooEncoder
from vpr_ros.encoders.weights import file_fingerprint
from vpr_ros.errors import ConfigError, NotImplementedFeature, SourceError, VprError
from vpr_ros.textio import load_yaml_file, short_repr
from vpr_ros.threadpools import use_torch_threads
from vpr_ros.training.cache import FeatureCache
from vpr_ros.training.losses import LOSSES, batch_loss
from vpr_ros.training.places import (
    check_alignment,
    epoch_batches,
    make_places,
    path_stretch,
    recall_at,
    region_masks,
    sample_members,
    validation_split,
)

log = logging.getLogger('vpr_ros.training')

TRAIN_DEFAULTS: dict[str, Any] = {
    'epochs': 20, 'places_per_batch': 32, 'images_per_place': 4, 'lr': 5e-4, 'weight_decay': 1e-4,
    'warmup_epochs': 1, 'loss': 'multi_similarity', 'ms_alpha': 1.0, 'ms_beta': 50.0, 'ms_base': 0.0,
    'ms_epsilon': 0.1, 'margin': None, 'pos_dist': 10.0, 'pos_yaw': 45.0, 'neg_dist': 25.0,
    'val_segment': [0.85, 1.0], 'exclude_segment': None, 'val_dist': 25.0, 'revisit_gap_s': 30.0,
    'min_overlap': 0.2, 'augment_copies': 2, 'every_n': 1, 'min_distance': 0.0, 'feature_batch': 8,
    'threads': 0, 'seed': 0, 'image_topic': None, 'pose_topic': None, 'poses': None, 'train_blocks': 0,
}
# Settings that must not change when a run is resumed (the data, the places and the head).
_FIXED_ON_RESUME = ('pos_dist', 'pos_yaw', 'neg_dist', 'val_segment', 'exclude_segment', 'augment_copies',
                    'every_n', 'min_distance', 'seed', 'loss', 'images_per_place', 'places_per_batch',
                    'train_blocks')
TRAINABLE = ('boq', 'mixvpr', 'netvlad', 'salad', 'megaloc', 'convap', 'cosplace', 'gem', 'avg')


def split_settings(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings over the defaults, encoder config): unknown keys belong to the encoder;
    a nested ``encoder:`` mapping is the encoder's too."""
    train, enc = dict(TRAIN_DEFAULTS), {}
    for key, value in config.items():
        if key == 'encoder' and isinstance(value, dict):
            enc.update(value)
        elif key in TRAIN_DEFAULTS:
            train[key] = value
        else:
            enc[key] = value
    if train['loss'] not in LOSSES:
        raise ConfigError(f'train: loss must be one of {", ".join(LOSSES)}, got {short_repr(train["loss"])}')
    if train['margin'] is None:
        train['margin'] = 0.1 if train['loss'] == 'triplet' else 0.5
    for key in ('epochs', 'places_per_batch', 'images_per_place', 'augment_copies', 'feature_batch'):
        if int(train[key]) < 1:
            raise ConfigError(f'train: {key} must be >= 1, got {short_repr(train[key])}')
    if int(train['train_blocks']) < 0:
        raise ConfigError(f'train: train_blocks must be >= 0, got {short_repr(train["train_blocks"])}')
    if int(train['places_per_batch']) < 2 or int(train['images_per_place']) < 2:
        raise ConfigError('train: a batch needs >= 2 places and >= 2 images per place')
    if not 0 < float(train['pos_dist']) < float(train['neg_dist']):
        raise ConfigError('train: need 0 < pos_dist < neg_dist')
    return train, enc


def prepare_encoder_config(name: str, enc: dict[str, Any]) -> dict[str, Any]:
    """The encoder config to train: EfficientNet-Lite0 unless a backbone with weights is given."""
    if name not in TRAINABLE:
        raise ConfigError(f'train: encoder {name!r} has no trainable head; trainable: {", ".join(TRAINABLE)}')
    enc = dict(enc)
    if not enc.get('weights') and not enc.get('backbone_weights'):
        backbone = enc.setdefault('backbone', 'efficientnet_lite0')
        if not str(backbone).startswith('efficientnet'):
            raise ConfigError(f'train: backbone {backbone} without backbone_weights would be random: give '
                              'backbone_weights: PATH (torchvision ResNet / DINOv2 file), weights: PATH (a '
                              'released model to fine-tune) or use backbone: efficientnet_lite0')
    return enc


def _open_sessions(paths: list[str], settings: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
    from vpr_ros.sources import open_source

    out = []
    for path in paths:
        src = open_source(path, settings['image_topic'], settings['pose_topic'], settings['poses'])
        frame_id = (src.pose_frames()[0] or None) if hasattr(src, 'pose_frames') else None
        out.append((path, src, frame_id))
    return out


def _frames(sessions: list[tuple[str, Any, str | None]], settings: dict[str, Any]):
    from vpr_ros.matching.keyframes import KeyframePolicy

    policy = KeyframePolicy(int(settings['every_n']), float(settings['min_distance']))
    for s, (_, src, _) in enumerate(sessions):
        for frame in policy.select(src.frames(require_pose=True)):
            yield s, frame


def _atomic_save(obj: Any, path: str) -> None:
    tmp = path + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_yaml(data: Any, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)


def plot_curve(history: list[dict[str, Any]], path: str, title: str) -> None:
    from vpr_ros.evaluation.report import _plt

    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ep = [h['epoch'] for h in history]
    for key, style in (('R@1', '-o'), ('R@5', '--s')):
        vals = [h.get(key) for h in history]
        if any(v is not None and not math.isnan(v) for v in vals):
            ax1.plot(ep, [np.nan if v is None else 100 * v for v in vals], style, label=f'val {key}')
    ax1.set_xlabel('epoch (0 = untrained head)')
    ax1.set_ylabel('validation recall [%]')
    ax2 = ax1.twinx()
    lep = [h['epoch'] for h in history if h.get('loss') is not None]
    ax2.plot(lep, [h['loss'] for h in history if h.get('loss') is not None], 'k:', label='train loss')
    ax2.set_ylabel('loss')
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc='lower right')
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_backbone(model: torch.nn.Module, train_blocks: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(frozen part whose outputs are cached, trainable part of the backbone run every step)."""
    if train_blocks == 0:
        return model.backbone, torch.nn.Identity()
    split = getattr(model.backbone, 'split', None)
    if split is None:
        raise NotImplementedFeature('train: train_blocks > 0 is implemented for EfficientNet backbones '
                                    f'only, not {type(model.backbone).__name__}; use train_blocks: 0')
    return split(train_blocks)


def _trainable_parameters(model: torch.nn.Module, tail: torch.nn.Module) -> list[torch.nn.Parameter]:
    backbone = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone and p.requires_grad]
    return head + list(tail.parameters())


def _train_mode(model: torch.nn.Module) -> None:
    # Trainable backbone blocks keep their ImageNet BatchNorm statistics (frozen, eval mode): a few
    # hundred frames of one route would drag them far from what the rest of the trunk expects.
    model.train()
    model.backbone.eval()


def _describe(model: torch.nn.Module, tail: torch.nn.Module, cache: FeatureCache, frames: np.ndarray,
              chunk: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), chunk):
            idx = frames[i:i + chunk]
            out.append(model.head(tail(cache.get(idx, np.zeros(len(idx), np.int64)))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def _init_vlad(encoder: ZooEncoder, tail: torch.nn.Module, cache: FeatureCache, frames: np.ndarray,
               seed: int) -> None:
    """NetVLAD: k-means clusters from local features of the training images (copy 0)."""
    layer = encoder.model.aggregation
    target = int(encoder.config['fit_descriptors'])
    rng = np.random.default_rng(seed)
    per = max(1, -(-target // max(len(frames), 1)))
    chunks = []
    for i in range(0, len(frames), 64):
        with torch.no_grad():
            fmap = tail(cache.get(frames[i:i + 64], np.zeros(len(frames[i:i + 64]), np.int64)))
        local = fmap.flatten(2).transpose(1, 2).numpy()
        for feats in local:
            chunks.append(feats[rng.choice(len(feats), min(per, len(feats)), replace=False)])
    layer.init_from_kmeans(np.concatenate(chunks), seed=seed, niter=100, max_points=target)


def train(sources: list[str], encoder_name: str, out_dir: str, config: dict[str, Any],
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train; returns the train.yaml content (see the module docstring)."""
    settings, enc_cfg = split_settings(config)
    enc_cfg = prepare_encoder_config(encoder_name, enc_cfg)
    if not sources:
        raise ConfigError('train: give at least one --source')
    out_dir = os.path.abspath(out_dir)
    state_path = os.path.join(out_dir, 'last.pth')
    # A run directory holding only a feature cache may be reused: new head settings, same cached features.
    if os.path.isdir(out_dir) and set(os.listdir(out_dir)) - {'cache'} and not resume:
        raise ConfigError(f'train: {out_dir} exists and is not empty: use --resume to continue it, '
                          'or another --out')
    if resume:
        previous = _read_previous(out_dir)
        changed = [k for k in _FIXED_ON_RESUME if previous['settings'].get(k) != settings.get(k)]
        if changed or previous['encoder']['name'] != encoder_name:
            raise ConfigError(f'train: cannot resume {out_dir} with other settings '
                              f'({", ".join(changed) or "encoder"})')
    os.makedirs(out_dir, exist_ok=True)
    if not resume:
        run = {'encoder': {'name': encoder_name, 'config': enc_cfg}, 'settings': settings,
               'sources': [os.path.abspath(p) for p in sources]}
        _atomic_yaml(_clean(run), os.path.join(out_dir, 'run.yaml'))
    use_torch_threads(int(settings['threads']))
    seed = int(settings['seed'])
    torch.manual_seed(seed)

    encoder = create_encoder(encoder_name, enc_cfg)
    model = encoder.model
    if not hasattr(model, 'head') or not hasattr(model, 'backbone'):
        raise VprError(f'train: encoder {encoder_name!r} does not split into backbone + head')

    # ----- data: sessions -> cached backbone features -------------------------------------------
    sessions = _open_sessions(sources, settings)
    names = [os.path.basename(os.path.normpath(p)) for p, _, _ in sessions]
    frame_ids = [f for _, _, f in sessions]
    trunk = model.backbone
    frozen, tail = split_backbone(model, int(settings['train_blocks']))
    key_parts = {'sources': [os.path.abspath(p) for p in sources], 'backbone': type(trunk).__name__,
                 'trunk': [getattr(trunk, a, None) for a in ('block', 'with_token')],
                 'backbone_state': _backbone_digest(model),
                 'norm': [encoder.pixel_mean.tolist(), encoder.pixel_std.tolist()],
                 'size': encoder.input_size,
                 'interp': getattr(encoder, 'interpolation', None),
                 **{k: settings[k] for k in ('augment_copies', 'seed', 'every_n', 'min_distance',
                                             'image_topic', 'pose_topic', 'poses', 'train_blocks')}}
    key = FeatureCache.key(key_parts)
    cache_dir = os.path.join(out_dir, 'cache')
    cache = FeatureCache.open(cache_dir, key)
    t0 = time.perf_counter()
    if cache is None:
        expected = sum(int(src.image_count) for _, src, _ in sessions)  # progress only: counts can lie
        cache = FeatureCache.build(cache_dir, key, _frames(sessions, settings), expected, frozen,
                                   encoder.preprocess, int(settings['augment_copies']), seed,
                                   int(settings['feature_batch']), {'sessions': names}, progress)
    cache_s = time.perf_counter() - t0
    table = cache.table
    if len(table) < 4:
        raise SourceError(f'train: only {len(table)} posed frames in the sources; need many more')

    # ----- alignment, held-out parts, places ------------------------------------------------------
    pos_dist, neg_dist = float(settings['pos_dist']), float(settings['neg_dist'])
    overlaps = check_alignment(table, frame_ids, names, neg_dist, float(settings['min_overlap']))
    usable = np.ones(len(table), bool)
    excluded = np.zeros(len(table), bool)
    if settings['exclude_segment'] is not None:
        stretch = path_stretch(table, tuple(settings['exclude_segment']))
        _, ex_far = region_masks(table, stretch, pos_dist, neg_dist)
        usable &= ex_far
        excluded = ~ex_far
    val_db = val_q = np.zeros(0, np.int64)
    val_how = 'none (val_segment: null)'
    if settings['val_segment'] is not None:
        stretch = path_stretch(table, tuple(settings['val_segment']))
        v_in, v_far = region_masks(table, stretch, pos_dist, neg_dist)
        v_in &= ~excluded
        usable &= v_far
        val_db, val_q, val_how = validation_split(table, v_in, float(settings['revisit_gap_s']), pos_dist)
    places = make_places(table, usable, pos_dist, float(settings['pos_yaw']))
    if len(places.members) < 2:
        raise SourceError(f'train: {len(places.members)} places with >= 2 images within {pos_dist:g} m '
                          f'and {settings["pos_yaw"]} deg: record more (or slower), add sessions, or '
                          'loosen pos_dist/pos_yaw')
    train_frames = np.unique(np.concatenate(places.members))
    log.info('train: %d frames in %d sessions, %d places from %d training frames; '
             'validation %d db / %d queries (%s)', len(table), len(names), len(places.members),
             len(train_frames), len(val_db), len(val_q), val_how)

    # ----- head init, optimiser, resume ---------------------------------------------------------
    history: list[dict[str, Any]] = []
    start_epoch = 1
    params = _trainable_parameters(model, tail)
    optim = torch.optim.AdamW(params, lr=float(settings['lr']), weight_decay=float(settings['weight_decay']))
    best = {'epoch': 0, 'R@1': -1.0, 'R@5': -1.0}
    if resume and os.path.isfile(state_path):
        state = torch.load(state_path, map_location='cpu', weights_only=True)
        model.load_state_dict(state['model'], strict=True)
        optim.load_state_dict(state['optimizer'])
        start_epoch = int(state['epoch']) + 1
        with open(os.path.join(out_dir, 'history.json'), encoding='utf-8') as fh:
            saved = json.load(fh)
        history, best = saved['history'], saved['best']
        log.info('train: resuming %s after epoch %d', out_dir, start_epoch - 1)
    elif encoder_name == 'netvlad' and not enc_cfg.get('weights'):
        _init_vlad(encoder, tail, cache, train_frames, seed)
        encoder._fitted = True

    def validate() -> dict[str, float]:
        if not len(val_db) or not len(val_q):
            return {'R@1': math.nan, 'R@5': math.nan}
        return recall_at(_describe(model, tail, cache, val_db), _describe(model, tail, cache, val_q),
                         table.xyz[val_db],
                         table.xyz[val_q], float(settings['val_dist']))

    best_path = os.path.join(out_dir, 'best.pth')
    if not history:
        history.append({'epoch': 0, 'loss': None, **validate(), 'seconds': 0.0})
        _atomic_save(model.state_dict(), best_path)  # the untrained head, until an epoch beats it
        best = {'epoch': 0, 'R@1': _num(history[0]['R@1']), 'R@5': _num(history[0]['R@5'])}
    epochs = int(settings['epochs'])
    P, K = int(settings['places_per_batch']), int(settings['images_per_place'])
    separation = neg_dist + pos_dist
    for epoch in range(start_epoch, epochs + 1):
        t_ep = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 100_003 + epoch)  # dropout masks
        lr = _lr(float(settings['lr']), epoch, epochs, int(settings['warmup_epochs']))
        for group in optim.param_groups:
            group['lr'] = lr
        batches = epoch_batches(places, P, separation, rng)
        if not batches:
            raise SourceError(f'train: no batch of >= 2 places {separation:g} m apart: '
                              'the route is too short')
        _train_mode(model)
        losses, actives = [], []
        bar = tqdm(batches, desc=f'epoch {epoch}/{epochs}', unit='batch', disable=not progress, leave=False)
        for batch in bar:
            frames, copies, labels = sample_members(places, batch, K, cache.copies, rng)
            desc = model.head(tail(cache.get(frames, copies)))
            loss, active = batch_loss(settings['loss'], desc, torch.from_numpy(labels), settings)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(float(loss.item()))
            actives.append(active)
            bar.set_postfix(loss=f'{losses[-1]:.4f}', mined=f'{active:.2f}')
        rec = validate()
        entry = {'epoch': epoch, 'loss': float(np.mean(losses)), 'mined': float(np.mean(actives)), 'lr': lr,
                 'batches': len(batches), **rec, 'seconds': round(time.perf_counter() - t_ep, 3)}
        history.append(entry)
        score = (_num(rec['R@1']), _num(rec['R@5']))
        no_val = math.isnan(rec['R@1'])
        if no_val or score >= (best['R@1'], best['R@5']):  # ties: the longer-trained epoch
            best = {'epoch': epoch, 'R@1': score[0], 'R@5': score[1]}
            _atomic_save(model.state_dict(), best_path)
        _atomic_save({'model': model.state_dict(), 'optimizer': optim.state_dict(), 'epoch': epoch},
                     state_path)
        with open(os.path.join(out_dir, 'history.json'), 'w', encoding='utf-8') as fh:
            json.dump({'history': history, 'best': best}, fh, indent=1)
        log.info('epoch %d: loss %.4f, val R@1 %.3f R@5 %.3f (%.1f s)', epoch, entry['loss'], rec['R@1'],
                 rec['R@5'], entry['seconds'])
    plot_curve(history, os.path.join(out_dir, 'training_curve.png'), f'vpr-ros train {encoder_name}')

    enc_out = {k: v for k, v in enc_cfg.items() if k != 'backbone_weights'}
    enc_out['weights'] = best_path
    _atomic_yaml(enc_out, os.path.join(out_dir, 'encoder.yaml'))
    epoch_s = [h['seconds'] for h in history if h['epoch'] > 0]
    report = {
        'encoder': {'name': encoder_name, 'config': enc_out, 'trained_from': _clean(enc_cfg),
                    'weights_fingerprint': file_fingerprint(best_path), 'dim': encoder.dim},
        'data': {'sources': [os.path.abspath(p) for p in sources], 'sessions': names, 'frame_ids': frame_ids,
                 'session_overlap': overlaps, 'frames': len(table), 'training_frames': int(len(train_frames)),
                 'places': len(places.members), 'excluded_frames': int(excluded.sum()),
                 'validation': {'database': int(len(val_db)), 'queries': int(len(val_q)), 'how': val_how},
                 'cache': {'dir': cache_dir, 'bytes': cache.bytes_on_disk, 'copies': cache.copies,
                           'seconds': round(cache_s, 2)}},
        'settings': _clean(settings),
        'history': history,
        'best': best,
        'untrained': {'R@1': history[0]['R@1'], 'R@5': history[0]['R@5']},
        'seconds_per_epoch': round(float(np.mean(epoch_s)), 3) if epoch_s else None,
        'use': f'vpr-ros build-map --encoder {encoder_name} --config {os.path.join(out_dir, "encoder.yaml")} '
               '--source BAG --out MAP',
    }
    _atomic_yaml(_clean(report), os.path.join(out_dir, 'train.yaml'))
    return report


def _lr(base: float, epoch: int, epochs: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to 10 % at the last epoch."""
    if warmup > 0 and epoch <= warmup:
        return base * epoch / (warmup + 1)
    span = max(epochs - warmup, 1)
    t = min(max(epoch - warmup - 1, 0) / span, 1.0)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _num(v: Any) -> float:
    return -1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _clean(obj: Any) -> Any:
    """YAML-safe plain types (NaN -> null)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _backbone_digest(model: torch.nn.Module) -> str:
    from vpr_ros.encoders.weights import state_fingerprint

    return state_fingerprint(model.backbone.state_dict())


def _read_previous(out_dir: str) -> dict[str, Any]:
    needed = [os.path.join(out_dir, n) for n in ('run.yaml', 'last.pth', 'history.json')]
    if not all(os.path.isfile(p) for p in needed):
        raise ConfigError(f'train: nothing to resume in {out_dir} '
                          '(needs run.yaml, last.pth and history.json)')
    return load_yaml_file(needed[0], 'train run settings')


"""Driving the one flow from a source: build a map, evaluate queries against it.

``build-map``, ``evaluate``, ``demo`` and (through the node) ``replay`` are thin drivers of
these functions; only where frames come from and where results go differ.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm import tqdm

from vpr_ros.encoders.base import Encoder
from vpr_ros.errors import SourceError
from vpr_ros.evaluation.metrics import QueryRecord, Thresholds, evaluate_retrieval, precision_recall_curve
from vpr_ros.evaluation.report import query_match_pairs, write_report
from vpr_ros.frames import Frame
from vpr_ros.localization import Localizer
from vpr_ros.mapdb import local_features as lf
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching.keyframes import KeyframePolicy
from vpr_ros.skips import SkipCounter


class Source(Protocol):
    image_count: int
    skips: SkipCounter

    def frames(self, require_pose: bool = True) -> Iterator[Frame]: ...


def open_source(path: str, image_topic: str | None = None, pose_topic: str | None = None,
                poses_csv: str | None = None, skips: SkipCounter | None = None) -> Source:
    """A rosbag2 directory/file (has metadata.yaml, .db3 or .mcap) or an image folder + CSV."""
    from vpr_ros.sources.bag import BagSource
    from vpr_ros.sources.folder import FolderSource

    if not os.path.exists(path):
        raise SourceError(f'not found: {path}')
    is_bag = os.path.isfile(path) or os.path.isfile(os.path.join(path, 'metadata.yaml')) or any(
        n.endswith(('.db3', '.mcap')) for n in os.listdir(path))
    if is_bag and not poses_csv:
        return BagSource(path, image_topic, pose_topic, skips)
    return FolderSource(path, poses_csv, skips)


def _batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class BuildStats:
    places: int = 0
    vectors: int = 0
    fit_s: float = 0.0
    encode_s: float = 0.0
    total_s: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.places / self.total_s if self.total_s else 0.0


def build_map(source: Source, encoder: Encoder, out_path: str, keyframes: KeyframePolicy = KeyframePolicy(),
              index: str = 'flat', dtype: str = 'float32', fit_max_images: int = 400,
              require_pose: bool = True, thumbnails: bool = True, progress: bool = True,
              description: str = '', local_features: lf.LocalFeatureConfig | None = lf.LocalFeatureConfig(),
              camera: lf.CameraIntrinsics | None = None) -> tuple[VprMap, BuildStats]:
    """Encode the keyframes of ``source`` into a new map at ``out_path`` (written atomically).

    Encoders that learn from the map (VLAD vocabularies, PCA) are first fitted on up to
    ``fit_max_images`` keyframes spread over the whole source. ``local_features`` (None = none)
    are stored per place for geometric verification, with the images' ``camera`` intrinsics.
    """
    stats = BuildStats()
    t_start = time.perf_counter()
    if encoder.requires_fit:
        t0 = time.perf_counter()
        step = max(1, math.ceil(source.image_count / max(keyframes.every_n, 1) / fit_max_images))
        fit_images = [f.rgb for i, f in enumerate(tqdm(keyframes.select(source.frames(require_pose)),
                                                       desc=f'reading {encoder.name} fit images',
                                                       disable=not progress, unit='img'))
                      if i % step == 0][:fit_max_images]
        if not fit_images:
            raise SourceError('no usable image to fit the encoder on')
        encoder.fit(fit_images)
        stats.fit_s = time.perf_counter() - t0
    build = {'description': description, 'keyframes': {'every_n': keyframes.every_n,
                                                       'min_distance': keyframes.min_distance}}
    vmap = VprMap.empty(encoder.identity(), index=index, dtype=dtype, encoder_state=encoder.get_state(),
                        build=build)
    if local_features is not None:
        vmap.local_features = lf.LocalFeatureStore(local_features, camera)
    batch_size = max(1, int(encoder.config['batch_size']))
    bar = tqdm(total=source.image_count, desc=f'building map ({encoder.name})', disable=not progress,
               unit='img')
    for batch in _batched(keyframes.select(source.frames(require_pose)), batch_size):
        t0 = time.perf_counter()
        sets = encoder.describe([f.rgb for f in batch])
        stats.encode_s += time.perf_counter() - t0
        for frame, vectors in zip(batch, sets):
            feats = lf.extract(frame.rgb, local_features) if local_features is not None else None
            vmap.add(frame.stamp, frame.pose, vectors, frame.source, frame.rgb if thumbnails else None, feats)
        bar.update(len(batch) * keyframes.every_n)
    bar.close()
    if not len(vmap):
        raise SourceError('no frame was usable for the map (see the skip counts above)')
    stats.places, stats.vectors = len(vmap), len(vmap.owners)
    stats.skipped = source.skips.as_dict()
    stats.total_s = time.perf_counter() - t_start
    vmap.meta.build.update({'places': stats.places, 'seconds': round(stats.total_s, 2),
                            'fit_seconds': round(stats.fit_s, 2), 'encode_seconds': round(stats.encode_s, 2),
                            'images_per_s': round(stats.images_per_s, 2), 'skipped': stats.skipped})
    vmap.save(out_path)
    return vmap, stats


def run_queries(localizer: Localizer, frames: Iterable[Frame], total: int | None = None,
                progress: bool = True) -> list[QueryRecord]:
    """Localise every frame."""
    records: list[QueryRecord] = []
    for frame in tqdm(frames, total=total, desc='localising queries', disable=not progress, unit='img'):
        loc = localizer.localize(frame.rgb, frame.stamp)
        records.append(QueryRecord(frame.stamp, frame.pose, [m.place_id for m in loc.matches],
                                   [m.score for m in loc.matches], loc.encode_ms, loc.search_ms,
                                   frame.source))
    return records


def evaluate(localizer: Localizer, source: Source, out_dir: str | None, thresholds: Thresholds = Thresholds(),
             progress: bool = True, label: str | None = None, pair_count: int = 6) -> dict[str, Any]:
    """Evaluate a query source against the localizer's map; writes results.json + plots to ``out_dir``."""
    t0 = time.perf_counter()
    records = run_queries(localizer, source.frames(True), source.image_count, progress)
    if not records:
        raise SourceError('no query frame could be used (see the skip counts above)')
    retrieval = evaluate_retrieval(records, localizer.map.places, thresholds,
                                   ns=[n for n in (1, 5, 10) if n <= localizer.top_k] or [1])
    results = {
        'encoder': localizer.encoder.identity(), 'map_places': len(localizer.map),
        'top_k': localizer.top_k, 'retrieval': retrieval,
        'precision_recall': precision_recall_curve(records, localizer.map.places, thresholds),
        'skipped': source.skips.as_dict(), 'wall_time_s': round(time.perf_counter() - t0, 2),
    }
    if out_dir:
        # A second, decode-only pass fetches the few query images to draw (no need to hold them all).
        pairs = query_match_pairs(retrieval['per_query'], source.frames(True), localizer.map.thumbnail,
                                  pair_count)
        results['files'] = write_report(out_dir, results, localizer.map.places, pairs,
                                        label or localizer.encoder.name)
    return results

"""Driving the one flow from a source: build a map, evaluate queries against it.

``build-map``, ``evaluate``, ``demo`` and (through the node) ``replay`` are thin drivers of
these functions; only where frames come from and where results go differ.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from vpr_ros import features as lf
from vpr_ros.encoders.base import Encoder
from vpr_ros.errors import SourceError
from vpr_ros.evaluation.metrics import (
    QueryRecord,
    Thresholds,
    evaluate_retrieval,
    full_precision_threshold,
    loop_frame_lost_at,
    loop_funnel,
    precision_recall_curve,
    timing_stats,
)
from vpr_ros.evaluation.report import (
    plot_loop_funnel,
    plot_loop_pr,
    query_match_pairs,
    write_json,
    write_report,
)
from vpr_ros.evaluation.results import Calibration, EvaluationResults, LoopEvaluationResults, SequenceSection
from vpr_ros.frames import Frame
from vpr_ros.geometry import metric
from vpr_ros.localization import Localizer
from vpr_ros.mapdb.index import plan_index
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.store import VprMap, check_save_target
from vpr_ros.matching import verification
from vpr_ros.matching.confidence import expected_calibration_error, fit_confidence
from vpr_ros.matching.keyframes import KeyframeGate, KeyframePolicy
from vpr_ros.matching.loop_closure import LoopClosureConfig, LoopClosureFilter
from vpr_ros.matching.sequence import SequenceConfig
from vpr_ros.matching.verification import VerificationConfig
from vpr_ros.sources import Source

T = TypeVar('T')


def spread_sample(items: Iterable[Any], limit: int, keep: Callable[[Any], T] | None = None) -> list[T]:
    """Up to ``limit`` items spread evenly over a stream of unknown length (a bag's message count can
    lie): items are kept at a stride that doubles, dropping every other kept one, whenever more than
    ``limit`` are held; ends with between limit/2 and limit items of a long stream, every item of a
    short one. ``keep`` turns an item into what is held (only for the items kept)."""
    kept: list[T] = []
    stride = 1
    for i, item in enumerate(items):
        if i % stride:
            continue
        kept.append(keep(item) if keep is not None else item)
        if len(kept) > limit:
            kept, stride = kept[::2], stride * 2
    return kept


def _batched(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# (batch, descriptor sets, local features or None per frame, encode seconds) per batch, in order
DescribedBatch = tuple[list[Frame], list[np.ndarray], list[Any], float]


class Describer(Protocol):
    def __call__(self, batches: Iterable[list[Frame]], encoder: Encoder,
                 local_features: lf.LocalFeatureConfig | None) -> Iterator[DescribedBatch]: ...


def describe_batch(encoder: Encoder, images: list[np.ndarray],
                   local_features: lf.LocalFeatureConfig | None) -> tuple[list[np.ndarray], list[Any], float]:
    """Descriptors and local features of one batch of images, and the encode seconds."""
    t0 = time.perf_counter()
    sets = encoder.describe(images)
    seconds = time.perf_counter() - t0
    feats = [lf.extract(rgb, local_features) if local_features is not None else None for rgb in images]
    return sets, feats, seconds


class LocalDescriber:
    """Encodes in this process."""

    def __call__(self, batches: Iterable[list[Frame]], encoder: Encoder,
                 local_features: lf.LocalFeatureConfig | None) -> Iterator[DescribedBatch]:
        for batch in batches:
            yield (batch, *describe_batch(encoder, [f.rgb for f in batch], local_features))


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
              camera: lf.CameraIntrinsics | None = None,
              describer: Describer | None = None, protect: Sequence[str] = ()) -> tuple[VprMap, BuildStats]:
    """Encode the keyframes of ``source`` into a new map at ``out_path`` (written atomically).

    Encoders that learn from the map (VLAD vocabularies, PCA) are first fitted on up to
    ``fit_max_images`` keyframes spread over the whole source, unless already fitted (a vocabulary
    loaded from elsewhere, vpr_ros.vocabulary). ``local_features`` (None = none)
    are stored per place for geometric verification, with the images' ``camera`` intrinsics.
    ``describer`` turns batches of keyframes into their descriptors (and local features), in
    order: by default in this process; vpr_ros.distributed.RayDescriber encodes on a Ray cluster.
    ``out_path`` is checked before any work (:func:`check_save_target`; ``protect``: the sources).
    """
    check_save_target(out_path, protect)
    plan_index(index, encoder.dim)  # a bad spec is refused before the encode (its vector count later)
    stats = BuildStats()
    t_start = time.perf_counter()
    if encoder.requires_fit and not encoder.is_fitted:
        t0 = time.perf_counter()
        read = tqdm(keyframes.select(source.frames(require_pose)), desc=f'reading {encoder.name} fit images',
                    disable=not progress, unit='img')
        # each kept as the fit reads it (the encoder's input size): 100 4K frames held 2.9 GB
        fit_images = spread_sample(read, fit_max_images, keep=lambda f: encoder.fit_image(f.rgb))
        read.close()
        if not fit_images:
            raise SourceError('no usable image to fit the encoder on')
        encoder.fit(fit_images)
        stats.fit_s = time.perf_counter() - t0
    build = {'description': description, 'keyframes': {'every_n': keyframes.every_n,
                                                       'min_distance': keyframes.min_distance}}
    vmap = VprMap.empty(encoder.identity(), index=index, dtype=dtype, encoder_state=encoder.get_state(),
                        build=build)
    pose_frames = getattr(source, 'pose_frames', None)  # bags know their frames; folders do not
    if pose_frames is not None:
        vmap.meta.frame_id, vmap.meta.child_frame_id = pose_frames()
    if local_features is not None:
        vmap.local_features = LocalFeatureStore(local_features, camera)
    batch_size = max(1, int(encoder.config['batch_size']))
    bar = tqdm(total=source.image_count, desc=f'building map ({encoder.name})', disable=not progress,
               unit='img')
    describer = describer or LocalDescriber()
    batches = _batched(keyframes.select(source.frames(require_pose)), batch_size)
    for batch, sets, feats, seconds in describer(batches, encoder, local_features):
        stats.encode_s += seconds
        for frame, vectors, f in zip(batch, sets, feats):
            vmap.add(frame.stamp, frame.pose, vectors, frame.source, frame.rgb if thumbnails else None, f)
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
    model = fit_confidence(vmap, progress=progress)  # stored in map.yaml (vpr_ros.matching.confidence)
    vmap.meta.confidence = model.to_dict() if model is not None else {}
    vmap.save(out_path)
    return vmap, stats


def run_queries(localizer: Localizer, frames: Iterable[Frame], total: int | None = None,
                progress: bool = True) -> list[QueryRecord]:
    """Localise every frame (in source order: the sequence history follows it). A frame's pose is
    its odometry for distance-spaced sequences (docs/sequence-matching.md)."""
    records: list[QueryRecord] = []
    sequence = localizer.sequence_config.enabled
    for frame in tqdm(frames, total=total, desc='localising queries', disable=not progress, unit='img'):
        loc = localizer.localize(frame.rgb, frame.stamp, odometry=frame.pose)
        confidence = None if math.isnan(loc.confidence) else round(loc.confidence, 5)
        extra: dict[str, Any] = {'matched_by': loc.matched_by, 'confidence': confidence}
        if sequence:
            extra.update(sequence_history=loc.sequence_history, sequence_ms=round(loc.sequence_ms, 3),
                         sequence_spacing=loc.sequence_spacing,
                         single_frame_place_ids=[m.place_id for m in loc.single_frame],
                         single_frame_scores=[round(m.score, 6) for m in loc.single_frame])
        records.append(QueryRecord(frame.stamp, frame.pose, [m.place_id for m in loc.matches],
                                   [m.score for m in loc.matches], loc.encode_ms, loc.search_ms, frame.source,
                                   extra))
    return records


def sequence_summary(localizer: Localizer, records: list[QueryRecord], places: list[Any],
                     thresholds: Thresholds, ns: list[int]) -> SequenceSection:
    """results.json's ``sequence`` section: the settings, how many frames each way, and (sequence on)
    the single-frame Recall@N of the same run for comparison."""
    cfg = localizer.sequence_config
    by_sequence = sum(r.extra.get('matched_by') == 'sequence' for r in records)
    out: SequenceSection = {'settings': cfg.as_dict(), 'enabled': cfg.enabled,
                            'frames_matched_by_sequence': by_sequence,
                            'frames_single_frame': len(records) - by_sequence}
    if cfg.enabled:
        single = [QueryRecord(r.stamp, r.pose, r.extra['single_frame_place_ids'],
                              r.extra['single_frame_scores']) for r in records]
        base = evaluate_retrieval(single, places, thresholds, ns=ns)
        out['single_frame_recall'] = base['recall']
        out['single_frame_recall_curve'] = base['recall_curve']
        out['sequence_ms'] = timing_stats([r.extra['sequence_ms'] for r in records
                                           if r.extra.get('matched_by') == 'sequence'])
    return out


def calibration_summary(localizer: Localizer, per_query: list[dict[str, Any]],
                        thresholds: Thresholds) -> Calibration:
    """results.json's ``calibration``: how well the confidence predicts a right top-1 on these queries.

    Over the answerable queries only (a map place within the threshold): the confidence is the
    probability of a right top-1 for a query of a mapped place (vpr_ros.matching.confidence)."""
    model = localizer.confidence_model
    rated = [q for q in per_query if 'correct_at_1' in q and q['place_ids']]
    answerable = [q for q in rated if q.get('answerable')]
    conf = [math.nan if q.get('confidence') is None else q['confidence'] for q in answerable]
    error = expected_calibration_error(conf, [q['correct_at_1'] for q in answerable])
    return {**error, 'dist_m': thresholds.dist_m, 'unanswerable': len(rated) - len(answerable),
            'model': model.to_dict() if model is not None else None}


def evaluate(localizer: Localizer, source: Source, out_dir: str | None, thresholds: Thresholds = Thresholds(),
             progress: bool = True, label: str | None = None, pair_count: int = 6) -> EvaluationResults:
    """Evaluate a query source against the localizer's map; writes results.json + plots to ``out_dir``."""
    t0 = time.perf_counter()
    model = localizer.confidence_model
    if model is None or model.dist_m != thresholds.dist_m:  # the confidence is that of being right here
        localizer.calibrate(thresholds.dist_m, progress)
    records = run_queries(localizer, source.frames(True), source.image_count, progress)
    if not records:
        raise SourceError('no query frame could be used (see the skip counts above)')
    ns = [n for n in (1, 5, 10) if n <= localizer.top_k] or [1]
    retrieval = evaluate_retrieval(records, localizer.map.places, thresholds, ns=ns)
    results: EvaluationResults = {
        'encoder': localizer.encoder.identity(), 'map_places': len(localizer.map),
        'top_k': localizer.top_k, 'retrieval': retrieval,
        'sequence': sequence_summary(localizer, records, localizer.map.places, thresholds, ns),
        'precision_recall': precision_recall_curve(records, localizer.map.places, thresholds),
        'calibration': calibration_summary(localizer, retrieval['per_query'], thresholds),
        'skipped': source.skips.as_dict(), 'wall_time_s': round(time.perf_counter() - t0, 2),
    }
    if out_dir:
        # A second, decode-only pass fetches the few query images to draw (no need to hold them all).
        pairs = query_match_pairs(retrieval['per_query'], source.frames(True), localizer.map.thumbnail,
                                  pair_count)
        results['files'] = write_report(out_dir, results, localizer.map.places, pairs,
                                        label or localizer.encoder.name)
    return results


@dataclass
class LoopEvaluationSettings:
    """How ``evaluate --loops`` grows its map and accepts closures: the node's incremental mode."""

    loop_closure: LoopClosureConfig = field(default_factory=LoopClosureConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    local_features: lf.LocalFeatureConfig = field(default_factory=lf.LocalFeatureConfig)
    camera: lf.CameraIntrinsics | None = None
    keyframe_min_interval: float = 1.0
    keyframe_min_distance: float = 0.0
    keyframe_max_similarity: float = 1.0
    top_k: int = 10
    sequence: SequenceConfig = field(default_factory=SequenceConfig)  # length 0 = single frame
    bootstrap_frames: int = 40  # an encoder without vocabulary fits it on the first N keyframes (as the node)


def _closure_summary(events: list[dict[str, Any]], loop_frames: set[float], dist_m: float) -> dict[str, Any]:
    correct = [e for e in events if e['error_m'] <= dist_m]
    closed = {e['t_query'] for e in correct} & loop_frames
    return {'published': len(events), 'correct': len(correct),
            'precision': round(len(correct) / len(events), 4) if events else None,
            'loop_frames_closed': len(closed), 'loop_frames': len(loop_frames),
            'recall': round(len(closed) / len(loop_frames), 4) if loop_frames else None}


# (frames' (stamp, pose) in order, the verified filter's published closures as (decision, metric solve against
# the place, place pose), out_dir) -> results section
PoseGraphCallback = Callable[[list[tuple[float, Any]], list[Any], str | None], dict[str, Any]]


def evaluate_loops(encoder: Encoder, source: Source, out_dir: str | None,
                   settings: LoopEvaluationSettings = LoopEvaluationSettings(),
                   thresholds: Thresholds = Thresholds(), progress: bool = True,
                   pose_graph: PoseGraphCallback | None = None,
                   also_dists: Sequence[float] = ()) -> LoopEvaluationResults:
    """Loop closures within one traversal, growing the map from empty as the node's incremental mode does.

    Every frame goes through the node's flow (:class:`vpr_ros.session.IncrementalSession`): localised
    against the keyframes added so far (those within ``min_time_separation`` excluded), then decided by
    the verified loop-closure filter; a second filter without verification decides on the same answers.
    Ground truth comes from the traversal's own poses: a closure is
    correct when the query and the matched place are within ``thresholds.dist_m``; a *loop
    frame* is one with a map place that far apart in time and that close in space.
    ``pose_graph`` (vpr_ros.slam.evaluation.PoseGraphHook) gets the trajectory and the published verified
    closures at the end, each with the node's metric solve against its place; its results go to
    ``results['pose_graph']``.
    """
    from vpr_ros.session import IncrementalSession, LoopQuery
    from vpr_ros.vocabulary import VocabularyBootstrap

    t0 = time.perf_counter()
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state(),
                        build={'description': 'grown by evaluate --loops'})
    vmap.local_features = LocalFeatureStore(settings.local_features, settings.camera)
    localizer = Localizer(vmap, encoder, settings.top_k, settings.sequence)
    # An encoder without vocabulary answers nothing until it is fitted on the first keyframes (as the node).
    boot = None if encoder.is_fitted else VocabularyBootstrap(localizer, settings.bootstrap_frames)
    solver = metric.for_map(vmap) if pose_graph is not None else None  # the node's metric loop constraints
    sep = settings.loop_closure.min_time_separation
    gate = KeyframeGate(settings.keyframe_min_interval, settings.keyframe_min_distance,
                        settings.keyframe_max_similarity)
    # The node's flow, verified closures; beside it a filter without verification on the same answers.
    session = IncrementalSession(localizer, LoopClosureFilter(settings.loop_closure), gate,
                                 verification.for_map(vmap, settings.verification), boot, thumbnails=False)
    plain = LoopClosureFilter(settings.loop_closure)
    place_xy: list[tuple[float, float]] = []  # by place id
    events: dict[str, list[dict[str, Any]]] = {'without_verification': [], 'with_verification': []}
    statuses: dict[str, Counter[str]] = {k: Counter() for k in events}
    per_frame: dict[str, list[tuple[float, bool]]] = {k: [] for k in events}
    loop_frames: set[float] = set()
    verify_ms: list[float] = []
    frames = 0
    trajectory: list[tuple[float, Any]] = []
    published: list[Any] = []
    keyframe_xy: list[tuple[float, float]] = []  # every keyframe so far (bootstrap ones before the fit too)
    keyframe_t: list[float] = []
    lost_at: dict[str, list[str | None]] = {k: [] for k in events}  # per loop frame, in loop_stamps order
    loop_stamps: list[float] = []
    nearest_revisit: dict[float, float] = {}  # frame -> distance to the nearest keyframe far enough in time
    frame_xy: dict[float, np.ndarray] = {}
    frame_retrieved: dict[float, list[int]] = {}
    lost_index: dict[str, dict[float, int]] = {k: {} for k in events}  # loop frame -> its lost_at entry

    def error_m(place_id: int, xy: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(place_xy[place_id]) - xy))

    def decide(query: LoopQuery) -> None:
        """One query's loop-closure decisions (the session's verified one, and one without verification on
        the same answers) and their bookkeeping."""
        t, matches = query.stamp, query.matches
        loop = session.decide_loop(query, settings.camera)
        assert loop.verify is not None  # evaluate --loops always verifies

        def correct(place_id: int) -> bool:
            return error_m(place_id, frame_xy[t]) <= thresholds.dist_m

        eligible = [m for m in matches if abs(t - m.stamp) >= sep]
        if eligible:
            per_frame['without_verification'].append((eligible[0].score, correct(eligible[0].place_id)))
            best = loop.verify(eligible)[0]  # mostly verified already: the filter asked for them
            if best.verified:
                score = next(m.score for m in eligible if m.place_id == best.place_id)
                per_frame['with_verification'].append((score, correct(best.place_id)))
        verify_ms.extend(loop.verify_ms)
        frame_retrieved[t] = [m.place_id for m in matches]
        decisions = {'without_verification': plain.update(t, matches), 'with_verification': loop.decision}
        for key, decision in decisions.items():
            statuses[key][decision.status.value] += 1
            # held earlier frames confirmed by this one (vpr_ros.matching.loop_closure) count as theirs
            for d in (*decision.confirms, decision):
                record_decision(key, d)
        # the published closures, each with the node's metric solve against its place (a held frame's with
        # its own features, which the session keeps until its chain confirms it, as in the node)
        for d, feats in loop.closures:
            f = feats() if solver is not None else None
            solved = solver.localize(f, [d.place_id], settings.camera) if solver and f is not None else None
            published.append((d, solved, vmap.place(d.place_id).pose))

    def record_decision(key: str, decision: Any) -> None:
        """A frame's decision (again, when a held frame is confirmed later): its funnel stage and event."""
        t, xy = decision.t_query, frame_xy[decision.t_query]

        def correct(place_id: int) -> bool:
            return error_m(place_id, xy) <= thresholds.dist_m

        if t in loop_frames:
            stage = loop_frame_lost_at(True, frame_retrieved[t], decision, correct)
            if t in lost_index[key]:
                lost_at[key][lost_index[key][t]] = stage
            else:
                lost_index[key][t] = len(lost_at[key])
                lost_at[key].append(stage)
        if decision.accepted:
            v = decision.verification
            events[key].append({'t_query': t, 't_match': decision.t_match, 'place_id': decision.place_id,
                                'score': round(decision.score, 5), 'correct': correct(decision.place_id),
                                'error_m': round(error_m(decision.place_id, xy), 3)})
            if v is not None:
                events[key][-1].update(inliers=v.inliers, model=v.model, views=decision.views)
    for frame in tqdm(source.frames(True), total=source.image_count, desc='loops (incremental map)',
                      disable=not progress, unit='img'):
        frames += 1
        trajectory.append((frame.stamp, frame.pose))
        t, xy = frame.stamp, np.asarray(frame.pose.position[:2], np.float64)
        if keyframe_t:
            apart = np.abs(np.asarray(keyframe_t) - t) >= sep
            dist = np.linalg.norm(np.asarray(keyframe_xy)[apart] - xy, axis=1)
            nearest_revisit[t] = float(dist.min()) if len(dist) else math.inf
            if nearest_revisit[t] <= thresholds.dist_m:
                loop_frames.add(t)
                loop_stamps.append(t)
        frame_xy[t] = xy
        frame_out = session.localize(t, frame.rgb, frame.pose, frame.source)
        if frame_out.keyframe:
            keyframe_xy.append(tuple(xy))
            keyframe_t.append(t)
        place_xy += [tuple(vmap.place(pid).pose.position[:2]) for pid in frame_out.added]
        if frame_out.localization is None and t in loop_frames:  # nothing is answered before the fit
            for key in events:
                lost_index[key][t] = len(lost_at[key])
                lost_at[key].append('answered')
        # the frame itself once answered; at the fit, the bootstrap keyframes (as the node)
        for query in frame_out.loop_queries:
            decide(query)
    if not frames:
        raise SourceError('no query frame could be used (see the skip counts above)')
    loops: dict[str, Any] = {
        'frames': frames, 'keyframes': len(vmap), 'loop_frames': len(loop_frames),
        'vocabulary': (f'bootstrapped from the first {boot.frames} keyframes (frames before the fit are not '
                       'answered; the keyframes among them are decided for loop closure after it)'
                       if boot is not None else 'given'),
        'settings': {'loop_closure': asdict(settings.loop_closure),
                     'verification': asdict(settings.verification),
                     'local_features': asdict(settings.local_features),
                     'camera': settings.camera.to_dict() if settings.camera else None,
                     'keyframe': {'min_interval': settings.keyframe_min_interval,
                                  'min_distance': settings.keyframe_min_distance,
                                  'max_similarity': settings.keyframe_max_similarity},
                     'dist_m': thresholds.dist_m, 'top_k': settings.top_k,
                     'sequence': settings.sequence.as_dict()},
        'verification_ms_per_candidate': timing_stats(verify_ms),
    }
    for key in events:
        scores = [s for s, _ in per_frame[key]]
        ok = [c for _, c in per_frame[key]]
        at_dist = {f'{d:g}': _closure_summary(events[key], {t for t, n in nearest_revisit.items() if n <= d},
                                              d) for d in also_dists}
        loops[key] = {**_closure_summary(events[key], loop_frames, thresholds.dist_m), 'at_dist': at_dist,
                      'statuses': dict(statuses[key]),
                      'funnel': loop_funnel(lost_at[key]),
                      'loop_frames_lost_at': [{'t': t, 'lost_at': at}
                                              for t, at in zip(loop_stamps, lost_at[key])],
                      'score_threshold': full_precision_threshold(scores, ok, len(loop_frames)),
                      'events': events[key]}
    results = {'encoder': encoder.identity(), 'mode': 'loops', 'loops': loops,
               'skipped': source.skips.as_dict(), 'wall_time_s': round(time.perf_counter() - t0, 2)}
    if pose_graph is not None:
        results['pose_graph'] = pose_graph(trajectory, published, out_dir)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, 'results.json'), results)
        plot_loop_pr({k: loops[k]['score_threshold'] for k in events}, os.path.join(out_dir, 'loop_pr.png'))
        plot_loop_funnel({k: loops[k]['funnel'] for k in events}, os.path.join(out_dir, 'loop_funnel.png'),
                         f"{encoder.name}: loop frames left after each stage ({thresholds.dist_m:g} m)")
        results['files'] = [os.path.join(out_dir, f)
                            for f in ('results.json', 'loop_pr.png', 'loop_funnel.png')]
        results['files'] += results.get('pose_graph', {}).get('files', [])
    return results

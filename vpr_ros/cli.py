"""`vpr-ros`: one command line with subcommands. Errors a user can fix print one line, exit 2."""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from vpr_ros import DEFAULT_ENCODER, deps
from vpr_ros.errors import ConfigError, VprError
from vpr_ros.textio import short_repr

if TYPE_CHECKING:
    from vpr_ros.evaluation.results import EvaluationResults, LoopEvaluationResults


class NumberType:
    """An argparse ``type=``: parses an int or float and refuses NaN, infinities and values outside
    [low, high] (``low_open``: low itself excluded) with one line (argparse: exit 2), as the node's
    parameter descriptors do. ``NumberType.param(name)`` takes the range of a node parameter."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    @classmethod
    def param(cls, name: str) -> 'NumberType':
        from vpr_ros.ros.parameters import PARAMETERS

        spec = next(s for s in PARAMETERS if s.name == name)
        return cls(type(spec.default), spec.low, spec.high)

    def describe(self) -> str:
        def show(v: float) -> str:
            return str(int(v)) if self.kind is int else f'{v:g}'
        bounds = ([] if self.low is None else [f"{'>' if self.low_open else '>='} {show(self.low)}"]) + (
            [] if self.high is None else [f'<= {show(self.high)}'])
        return ('an integer' if self.kind is int else 'a finite number') + (
            ' ' + ' and '.join(bounds) if bounds else '')

    def __call__(self, text: str) -> int | float:
        from vpr_ros.textio import short_repr

        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f'expected {self.describe()}, got {short_repr(text)}') from None
        if ((self.kind is float and not math.isfinite(value))
                or (self.low is not None and (value < self.low or (self.low_open and value == self.low)))
                or (self.high is not None and value > self.high)):
            raise argparse.ArgumentTypeError(f'expected {self.describe()}, got {short_repr(text)}')
        return value


SEED = NumberType(int, 0, 2 ** 63 - 1)
SCALE = NumberType(float, 0.0, 100.0, low_open=True)          # sample world route length scale
DIST = NumberType(float, 0.0, 1.0e7, low_open=True)           # a distance threshold [m]
YAW = NumberType(float, 0.0, 180.0, low_open=True)            # a heading threshold [deg]


def _encoder_config(args: argparse.Namespace) -> dict[str, Any]:
    """Encoder config from --config FILE (YAML mapping) and --set key=value (values parsed as YAML)."""
    from vpr_ros.textio import load_yaml, load_yaml_file

    config: dict[str, Any] = {}
    if getattr(args, 'config', None):
        loaded = load_yaml_file(args.config, '--config') or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f'{args.config} must hold a mapping of encoder settings')
        config.update(loaded)
    for item in getattr(args, 'set', None) or []:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ConfigError(f'--set expects key=value, got {short_repr(item)}')
        config[key.strip()] = load_yaml(value, f'--set {key.strip()[:40]}')
    return config


def _add_encoder_args(p: argparse.ArgumentParser, with_name: bool = True) -> None:
    if with_name:
        p.add_argument('--encoder', default=DEFAULT_ENCODER, help='encoder name (see `vpr-ros encoders`)')
    p.add_argument('--config', help='YAML file with encoder settings')
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='one encoder setting (repeatable)')


def _add_verify_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument('--map-verify', choices=['full', 'size', 'none'], default='full',
                   help='map checks on load: full = every file against its checksum and every descriptor; '
                        'size = file sizes and a sample of descriptors (huge maps); none')


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--image-topic', help='image topic (default: the only Image/CompressedImage topic)')
    p.add_argument('--pose-topic', help='pose topic (Odometry, PoseStamped, PoseWithCovarianceStamped)')
    p.add_argument('--poses', help='CSV of poses for an image folder (default FOLDER/poses.csv)')
    _param_option(p, '--max-image-pixels', 'max_image_pixels', metavar='N',
                  help='skip images whose header declares more pixels than this, before decoding '
                       '(0 = no limit)')


def add_setting_options(group: Any, cls: type, flag_prefix: str, only: tuple[str, ...] | None = None,
                        prefix: str | None = None) -> None:
    """One option per described field of the config dataclass ``cls`` (vpr_ros.settings; ``only``: these
    fields): flag ``flag_prefix`` + the field name, the field's default, its range or choices, and its
    description (naming the node parameter it sets) as help."""
    from vpr_ros.settings import settings_of

    for s in settings_of(cls, prefix):
        if only is not None and s.field not in only:
            continue
        text = (s.about.cli_help or s.about.description.rstrip('.')) + f' (node parameter {s.name})'
        kwargs: dict[str, Any] = {'dest': s.name, 'default': s.default, 'help': text.replace('%', '%%')}
        if s.about.choices:
            kwargs['choices'] = s.about.choices
        elif isinstance(s.default, bool):
            raise TypeError(f'{s.name}: a bool setting has no command-line form yet')
        elif isinstance(s.default, (int, float)):
            kwargs.update(type=NumberType(type(s.default), s.about.low, s.about.high),
                          metavar=(s.about.name or s.field).upper())
        group.add_argument(s.about.cli_flag or flag_prefix + s.field.replace('_', '-'), **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, prefix: str | None = None, **fixed: Any) -> Any:
    """``cls`` from the options :func:`add_setting_options` added (the fields without one keep their
    defaults), validated."""
    from vpr_ros.settings import config_from_flat, settings_of

    given = {s.name: getattr(args, s.name) for s in settings_of(cls, prefix) if hasattr(args, s.name)}
    config = config_from_flat(cls, given, prefix, partial=True, **fixed)
    config.validate()
    return config


def _param_option(p: Any, flag: str, parameter: str, help: str, **kwargs: Any) -> None:
    """An option that sets what a node parameter sets, with its default and range (vpr_ros.ros.parameters)."""
    from vpr_ros.ros.parameters import DEFAULTS

    p.add_argument(flag, type=NumberType.param(parameter), default=DEFAULTS[parameter], help=help, **kwargs)


def add_sequence_args(p: argparse.ArgumentParser) -> None:
    """Sequence-matching options shared by `evaluate` and `replay` (defaults: OpenSeqSLAM's)."""
    from vpr_ros.matching.sequence import SequenceConfig

    add_setting_options(p.add_argument_group('sequence matching (SeqSLAM)'), SequenceConfig, '--sequence-')


def cmd_sample(args: argparse.Namespace) -> int:
    from vpr_ros.sample import generate_sample

    info = generate_sample(args.out, seed=args.seed, storage=args.storage, compressed=args.compressed,
                           scale=args.scale, traversals=tuple(args.traversals))
    for name, path in info.bags.items():
        print(f'{name:10s} {info.frames[name]:5d} frames  {path}')
    print(f'route length {info.route_length_m:.0f} m, storage {info.storage}')
    return 0


def cmd_node_params(_args: argparse.Namespace) -> int:
    from vpr_ros.ros.parameters import params_file_text

    sys.stdout.write(params_file_text())
    return 0


def cmd_build_map(args: argparse.Namespace) -> int:
    from vpr_ros.encoders import create_encoder
    from vpr_ros.features import LocalFeatureConfig, load_camera_info_yaml
    from vpr_ros.mapdb.store import check_save_target
    from vpr_ros.matching.keyframes import KeyframePolicy
    from vpr_ros.pipeline import build_map
    from vpr_ros.sources import open_source

    protect = [args.source] + ([args.poses] if args.poses else [])
    check_save_target(args.out, protect)  # before the encoder loads: a wrong --out fails in a second
    encoder = create_encoder(args.encoder, _encoder_config(args))
    if args.vocabulary:
        from vpr_ros.vocabulary import load_vocabulary

        if not encoder.requires_fit:
            raise ConfigError(f'encoder {encoder.name!r} fits nothing on map images; '
                              '--vocabulary does not apply')
        load_vocabulary(encoder, args.vocabulary)
    features = None
    if args.local_features != 'none':
        features = LocalFeatureConfig(args.local_features, args.max_keypoints)
        features.validate()
    camera = load_camera_info_yaml(args.camera_info) if args.camera_info else None
    source = open_source(args.source, args.image_topic, args.pose_topic, args.poses,
                         max_pixels=args.max_image_pixels)
    describer = None
    if args.ray:
        from vpr_ros.distributed import RayDescriber

        if args.workers is not None and args.workers < 1:
            raise ConfigError('--workers must be >= 1')
        describer = RayDescriber(args.ray, args.workers)
        print(f'Ray: {describer.workers} encoding tasks in parallel on a cluster of {describer.cpus} CPUs')
    elif args.workers is not None:
        raise ConfigError('--workers needs --ray auto|ADDRESS')
    vmap, stats = build_map(source, encoder, args.out, KeyframePolicy(args.every_n, args.min_distance),
                            index=args.index, dtype=args.dtype, require_pose=not args.no_poses,
                            thumbnails=not args.no_thumbnails, description=f'from {args.source}',
                            local_features=features, camera=camera, describer=describer, protect=protect)
    print(f'map {args.out}: {stats.places} places, {stats.vectors} vectors of dim {encoder.dim} '
          f'({encoder.name}); {stats.images_per_s:.1f} images/s, {stats.total_s:.1f} s'
          + (f', skipped {stats.skipped}' if stats.skipped else ''))
    return 0


def cmd_merge_maps(args: argparse.Namespace) -> int:
    from vpr_ros.mapdb.merge import merge_maps
    from vpr_ros.mapdb.store import check_save_target

    check_save_target(args.out, args.maps)
    merged = merge_maps(args.maps, args.names)
    merged.save(args.out)
    sessions = merged.meta.build['sessions']
    print(f'map {args.out}: {len(merged)} places in {len(sessions)} sessions ('
          + ', '.join(f"{s['name']}: {s['last'] - s['first'] + 1}" for s in sessions) + ')')
    advice = merged.retrain_advice()
    if advice:
        print(f'note: re-train advised ({advice}): vpr-ros build-map the sessions again')
    return 0


def _print_results(results: EvaluationResults) -> None:
    from vpr_ros.evaluation.metrics import recall_text

    r = results['retrieval']
    t = r['timing_ms']
    print(f"{results['encoder']['name']}: {recall_text(r['recall'])}  "
          f"({r['answerable_queries']}/{r['queries']} answerable queries, "
          f"{r['thresholds']['dist_m']:g} m)")
    print(f"  encode {t['encode']['p50']:.1f} ms p50 / {t['encode']['p95']:.1f} p95, "
          f"search {t['search']['p50']:.2f} ms p50 / {t['search']['p95']:.2f} p95"
          + (f"; skipped {results['skipped']}" if results.get('skipped') else ''))
    seq = results.get('sequence') or {}
    if seq.get('enabled'):
        single = recall_text(seq['single_frame_recall'])
        print(f"  sequence length {seq['settings']['length']}: {seq['frames_matched_by_sequence']} frames by "
              f"sequence, {seq['frames_single_frame']} single-frame (short history); "
              f"single-frame in the same run: {single}")


def _print_loops(results: LoopEvaluationResults) -> None:
    lp = results['loops']
    print(f"{results['encoder']['name']} loops within one run: {lp['frames']} frames, "
          f"{lp['keyframes']} keyframes, "
          f"{lp['loop_frames']} loop frames ({lp['settings']['dist_m']:g} m, "
          f"{lp['settings']['loop_closure']['min_time_separation']:g} s apart)")
    for key in ('without_verification', 'with_verification'):
        r, th = lp[key], lp[key]['score_threshold']
        print(f"  {key.replace('_', ' ')}: {r['published']} closures published, {r['correct']} correct "
              f"(precision {r['precision']}), {r['loop_frames_closed']}/{lp['loop_frames']} loop frames "
              f"closed; min_score for 100% precision {th['min_score']} "
              f"(recall there {th['recall_at_100_precision']})")
        print('    loop frames left: ' + ' -> '.join(f'{k} {n}' for k, n in r['funnel'].items()))
        for d, a in r['at_dist'].items():
            print(f"    at {d} m: {a['published']} published, {a['correct']} correct "
                  f"(precision {a['precision']}), recall {a['recall']}")
    t = lp['verification_ms_per_candidate']
    if t.get('count'):
        print(f"  verification {t['p50']:.1f} ms p50 / {t['p95']:.1f} p95 per candidate "
              f"({t['count']} candidates)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vpr_ros.evaluation.metrics import Thresholds
    from vpr_ros.localization import Localizer
    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.pipeline import evaluate
    from vpr_ros.sources import open_source

    overrides = _encoder_config(args)
    if args.threads:
        overrides['threads'] = args.threads
    if args.loops:
        return _evaluate_loops(args, overrides)
    if not args.map:
        raise ConfigError('evaluate needs --map (or --loops for loops within the query traversal)')
    if args.encoder:
        raise ConfigError('--encoder applies to --loops only: evaluate --map uses the encoder the map was '
                          'built with')
    localizer = Localizer.from_map(args.map, overrides, top_k=args.top_k, verify=args.map_verify,
                                   sequence=config_from_args(SequenceConfig, args))
    source = open_source(args.queries, args.image_topic, args.pose_topic, args.poses,
                         max_pixels=args.max_image_pixels)
    results = evaluate(localizer, source, args.out, Thresholds(args.dist, args.yaw))
    _print_results(results)
    if args.out:
        print(f'report: {args.out}/results.json and plots')
    return 0


def _local_feature_info(vmap: Any) -> dict[str, Any] | str:
    store = vmap.local_features
    if store is None:
        return 'none (geometric verification unavailable; rebuild with vpr-ros build-map)'
    return {'kind': store.config.kind, 'max_keypoints': store.config.max_keypoints,
            'keypoints': store.keypoint_count, 'bytes': store.nbytes,
            'bytes_per_place': round(store.nbytes / max(len(store), 1), 1),
            'camera': store.camera.to_dict() if store.camera else None}


def _metric_pose_info(vmap: Any) -> dict[str, Any] | str:
    """What the metric pose (vpr_ros.geometry) finds in the map: it stores nothing of its own; landmarks
    are triangulated on demand from the local features and poses and cached in memory."""
    from vpr_ros.geometry.metric import LANDMARK_BYTES

    store = vmap.local_features
    if store is None:
        return 'unavailable: no local features (rebuild with vpr-ros build-map)'
    posed = int(vmap.places.has_pose.sum())
    return {'stored_bytes_per_place': 0, 'source': 'landmarks triangulated on demand from local_features and '
            'place poses, cached in memory',
            'landmark_cache_bytes_per_place_max': store.config.max_keypoints * LANDMARK_BYTES,
            'places_with_pose': posed,
            'intrinsics': 'stored' if store.camera is not None else 'none stored: give the node camera_info'}


def _evaluate_loops(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from vpr_ros.encoders import create_encoder
    from vpr_ros.evaluation.metrics import Thresholds
    from vpr_ros.features import LocalFeatureConfig, load_camera_info_yaml
    from vpr_ros.matching.loop_closure import LoopClosureConfig
    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.matching.verification import VerificationConfig
    from vpr_ros.pipeline import LoopEvaluationSettings, evaluate_loops
    from vpr_ros.sources import open_source

    if args.map:
        raise ConfigError('--loops grows its map from the query traversal itself; drop --map')
    features = LocalFeatureConfig(args.local_features, args.max_keypoints)
    features.validate()
    settings = LoopEvaluationSettings(
        loop_closure=config_from_args(LoopClosureConfig, args),
        verification=config_from_args(VerificationConfig, args), local_features=features,
        camera=load_camera_info_yaml(args.camera_info) if args.camera_info else None,
        keyframe_min_interval=args.keyframe_interval, top_k=args.top_k,
        sequence=config_from_args(SequenceConfig, args))
    encoder = create_encoder(args.encoder or DEFAULT_ENCODER, overrides)
    source = open_source(args.queries, args.image_topic, args.pose_topic, args.poses,
                         max_pixels=args.max_image_pixels)
    hook = _pose_graph_hook(args, settings.loop_closure.min_time_separation) if args.pose_graph else None
    results = evaluate_loops(encoder, source, args.out, settings, Thresholds(args.dist, None),
                             pose_graph=hook, also_dists=args.also_dist)
    _print_loops(results)
    if hook is not None:
        _print_pose_graph(results['pose_graph'])
    if args.out:
        print(f'report: {args.out}/results.json, loop_pr.png, loop_funnel.png'
              + (', pose_graph.png' if hook else ''))
    return 0


def _pose_graph_hook(args: argparse.Namespace, min_time_separation: float) -> Any:
    """The pose-graph stage of `evaluate --loops --pose-graph`; checks its needs before any frame is read."""
    absent = deps.missing(deps.SLAM)
    if absent:
        raise ConfigError(f"--pose-graph needs {', '.join(absent)} (the [slam] extra, pinned in "
                          f"requirements.txt): {sys.executable} -m pip install "
                          + ' '.join(deps.SLAM[m] for m in absent))
    if not args.camera_info:
        raise ConfigError('--pose-graph needs --camera-info: closures carry a relative pose only with the '
                          'essential matrix')
    from vpr_ros.slam.evaluation import PoseGraphHook, PoseGraphSettings
    from vpr_ros.slam.graph import PoseGraphConfig
    from vpr_ros.slam.odometry import DriftModel

    odometry = None
    if args.odometry_topic:
        from vpr_ros.sources.bag import BagSource

        odometry = BagSource(args.queries, args.image_topic, args.odometry_topic).pose_track()
    settings = PoseGraphSettings(DriftModel(args.drift_translation, args.drift_yaw, args.drift_seed),
                                 PoseGraphConfig(args.robust_kernel),
                                 min_time_separation=min_time_separation,
                                 metric_closures=not args.direction_only_closures)
    return PoseGraphHook(settings, odometry)


def _print_pose_graph(pg: dict[str, Any]) -> None:
    cl = pg['closures']
    print(f"pose graph: {pg['nodes']} nodes, odometry {pg['odometry']}, {cl['used']} closures "
          f"({cl['metric']} metric, {cl['direction_only']} direction-only), "
          f"kernel {pg['graph']['robust_kernel']}")
    if 'after' not in pg:
        print(f"  no closure to add: ATE {pg['before']['ate_m']['rmse']:.2f} m (odometry only)")
    else:
        print(f"  ATE (SE(3)-aligned RMSE) before {pg['before']['ate_m']['rmse']:.2f} m, after "
              f"{pg['after']['ate_m']['rmse']:.2f} m (ratio {pg['ate_ratio']}); without the kernel "
              f"{pg['after_without_kernel']['ate_m']['rmse']:.2f} m")
    fc = pg.get('false_closure')
    if fc:
        for variant in ('direction_only', 'metric'):
            v = fc[variant]
            print(f"  + one false closure ({variant.replace('_', '-')}, {fc['distance_m']:.0f} m apart): ATE "
                  f"{v['with_kernel']['ate_m']['rmse']:.2f} m with the kernel, "
                  f"{v['without_kernel']['ate_m']['rmse']:.2f} m without")


def cmd_map_info(args: argparse.Namespace) -> int:
    from vpr_ros.mapdb.store import VprMap

    vmap = VprMap.load(args.map, mmap=True, verify=args.map_verify)
    meta = vmap.meta
    info = {
        'path': os.path.abspath(args.map), 'schema_version': meta.schema_version, 'created': meta.created,
        'encoder': meta.encoder, 'places': meta.count, 'vectors': meta.vectors, 'dim': meta.dim,
        'dtype': meta.dtype, 'index': meta.index,
        'pose_frame': meta.frame_id or 'unknown', 'pose_child_frame': meta.child_frame_id or 'unknown',
        'descriptor_bytes': int(vmap.descriptors.nbytes),
        'bytes_per_place': round(vmap.descriptors.nbytes / max(meta.count, 1), 1),
        'encoder_state': {k: list(v.shape) for k, v in vmap.encoder_state.items()},
        'thumbnails': len(vmap.thumbnails), 'local_features': _local_feature_info(vmap),
        'metric_pose': _metric_pose_info(vmap), 'build': meta.build,
    }
    stamps = vmap.places.stamps
    if len(stamps):
        info['stamps'] = [float(stamps.min()), float(stamps.max())]
    posed = vmap.places.poses[vmap.places.has_pose]
    if len(posed):
        info['extent_m'] = {'x': [float(posed[:, 0].min()), float(posed[:, 0].max())],
                            'y': [float(posed[:, 1].min()), float(posed[:, 1].max())]}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(info, sort_keys=False).rstrip())
    return 0


def cmd_export_vocabulary(args: argparse.Namespace) -> int:
    from vpr_ros.vocabulary import export_vocabulary

    vocab = export_vocabulary(args.map, args.out)
    shapes = ', '.join(f'{k} {"x".join(map(str, v.shape))}' for k, v in sorted(vocab.state.items()))
    print(f"vocabulary {args.out}: {vocab.identity['name']} ({shapes}) from {vocab.source}")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from vpr_ros.encoders.catalog import encoder_table

    rows = encoder_table(args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = [k for k in rows[0]] if rows else []
    widths = {c: max(len(c), *(len(str(r.get(c, ''))) for r in rows)) for c in cols}
    print('  '.join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print('  '.join(str(r.get(c, '')).ljust(widths[c]) for c in cols))
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from vpr_ros.export import export_onnx

    report = export_onnx(args.name, args.out, _encoder_config(args), batch=args.batch)
    print(json.dumps(report, indent=1))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from vpr_ros.explain import explain_boq

    out = explain_boq(args.image, args.out, _encoder_config(args))
    print(f'attention overlay: {out}')
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from vpr_ros.training.trainer import train

    config = _encoder_config(args)
    for flag, key in (('pos_dist', 'pos_dist'), ('pos_yaw', 'pos_yaw'), ('neg_dist', 'neg_dist'),
                      ('epochs', 'epochs'), ('seed', 'seed'), ('image_topic', 'image_topic'),
                      ('pose_topic', 'pose_topic'), ('poses', 'poses')):
        if getattr(args, flag) is not None:
            config[key] = getattr(args, flag)
    report = train(args.source, args.encoder, args.out, config, resume=args.resume)
    best, untrained = report['best'], report['untrained']

    def pct(v: Any) -> str:
        return 'n/a' if v is None or v < 0 else f'{v * 100:.1f}%'
    data = report['data']
    print(f"trained {args.encoder} on {data['places']} places ({data['training_frames']} frames, "
          f"{len(data['sessions'])} sessions), {report['seconds_per_epoch'] or 0:.1f} s/epoch")
    print(f"validation R@1 {pct(best['R@1'])} R@5 {pct(best['R@5'])} (epoch {best['epoch']}); untrained head "
          f"R@1 {pct(untrained['R@1'])} R@5 {pct(untrained['R@5'])}")
    print(f"weights {report['encoder']['config']['weights']} ({report['encoder']['weights_fingerprint']})")
    print(f"use: {report['use']}")
    return 0


def _add_replay_args(p: argparse.ArgumentParser) -> None:
    from vpr_ros.ros.replay_config import LOCKSTEP_TIMEOUT_S, ReplayConfig

    timeout = NumberType(float, 0.0, 86_400.0, low_open=True)
    p.add_argument('--bag', required=True, help='query rosbag2 (images + ground-truth poses)')
    p.add_argument('--map', required=True, help='map directory (the node loads it; evaluation reads it)')
    p.add_argument('--rate', type=NumberType(float, 0.0, 1000.0, low_open=True), default=ReplayConfig.rate,
                   help='playback speed, 1.0 = real time')
    p.add_argument('--lockstep', action='store_true',
                   help='publish each image only once the node answered the previous one (at most '
                        f'{LOCKSTEP_TIMEOUT_S:g} s each): no frame dropped however slow the CPU, but not '
                        'real time')
    p.add_argument('--out', default=ReplayConfig.out, help='report folder (results.json + PNGs + node.log)')
    p.add_argument('--params-file', help='node parameters YAML (default: the node defaults); the '
                                         '--sequence-* options are applied after it')
    p.add_argument('--connect', action='store_true',
                   help='use an already running node instead of starting one')
    p.add_argument('--node', default=ReplayConfig.node, help='fully qualified name of the node')
    p.add_argument('--image-topic', help='image topic of the bag (default: the only one)')
    p.add_argument('--pose-topic', help='ground-truth pose topic of the bag (default: the only one)')
    p.add_argument('--publish-topic', help='topic to play the images on (default: the bag topic; '
                   "+ '/compressed' for a compressed stream not named so)")
    p.add_argument('--param', '-p', action='append', default=[], metavar='NAME:=VALUE',
                   help='extra parameter for the started node (repeatable)')
    p.add_argument('--dist', type=DIST, default=ReplayConfig.dist, help='positive distance threshold [m]')
    p.add_argument('--yaw', type=YAW, default=ReplayConfig.yaw, help='optional heading threshold [deg]')
    p.add_argument('--startup-timeout', type=timeout, default=ReplayConfig.startup_timeout,
                   help='seconds to wait for the node')
    p.add_argument('--idle-timeout', type=timeout, default=ReplayConfig.idle_timeout,
                   help='after playback, stop once the node has been silent this long [s]')
    add_sequence_args(p)


def replay_config(args: argparse.Namespace) -> Any:
    """The :class:`vpr_ros.ros.replay_config.ReplayConfig` of `vpr-ros replay`'s options (each field is
    the option of the same name; ``params`` is --param)."""
    from dataclasses import fields

    from vpr_ros.matching.sequence import SequenceConfig
    from vpr_ros.ros.replay_config import ReplayConfig

    same_name = {f.name: getattr(args, f.name) for f in fields(ReplayConfig)
                 if f.name not in ('params', 'sequence')}
    return ReplayConfig(**same_name, params=tuple(args.param),
                        sequence=config_from_args(SequenceConfig, args))


def cmd_replay(args: argparse.Namespace) -> int:
    from vpr_ros.ros.replay import run

    return int(run(replay_config(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    from vpr_ros.demo import run_demo

    return run_demo(args)


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows an option's default after its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ''
        # identity, not ==: a default of 0 is shown (0 == False)
        if (action.default is None or action.default is False or action.default == argparse.SUPPRESS
                or not action.option_strings
                or 'default' in text or action.help == argparse.SUPPRESS):
            return action.help
        return f'{text} (default: %(default)s)'.strip()


def build_parser() -> argparse.ArgumentParser:
    from vpr_ros.features import KINDS, LocalFeatureConfig
    from vpr_ros.matching.loop_closure import LoopClosureConfig
    from vpr_ros.matching.verification import VerificationConfig

    parser = argparse.ArgumentParser(
        prog='vpr-ros', description='Visual place recognition: sample data, maps, evaluation, ROS replay.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('sample', help='write the procedural sample world as ROS 2 bags',
                       description='Render the sample street world and write mapping/query/viewpoint '
                                   'traversals as rosbag2 bags with ground-truth nav_msgs/Odometry.')
    p.add_argument('out', help='output folder (one bag per traversal inside)')
    p.add_argument('--seed', type=SEED, default=0)
    p.add_argument('--storage', choices=['sqlite3', 'mcap'], default='sqlite3')
    p.add_argument('--compressed', action='store_true', help='write sensor_msgs/CompressedImage (JPEG)')
    p.add_argument('--scale', type=SCALE, default=1.0, help='route length scale (smaller = fewer frames)')
    p.add_argument('--traversals', nargs='+', default=['mapping', 'query', 'viewpoint'])
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser('build-map', help='encode a bag or image folder into a map directory',
                       description='Build a map: keyframes of a rosbag2 (image + pose topics) or an image '
                                   'folder + CSV, encoded with the chosen encoder; written atomically.')
    p.add_argument('--source', required=True, help='rosbag2 (sqlite3/mcap) or image folder')
    p.add_argument('--out', required=True, help='map directory to write (replaced atomically)')
    _add_encoder_args(p)
    _add_source_args(p)
    p.add_argument('--every-n', type=NumberType(int, 1, 1_000_000_000),
                   default=1, help='keep every Nth frame')
    _param_option(p, '--min-distance', 'keyframe.min_distance', help='minimum metres between keyframes')
    p.add_argument('--index', default='flat',
                   help='faiss index: flat, fp16, sq8, hnsw32, '
                        'ivf1024, ivf1024,pq64, opq64_256,ivf1024,pq64, '
                        'pca256,hnsw32; @N sets nprobe/efSearch (see vpr_ros/mapdb/index.py)')
    p.add_argument('--dtype', choices=['float32', 'float16'], default='float32', help='descriptor storage')
    p.add_argument('--ray', metavar='auto|ADDRESS',
                   help='encode on a Ray cluster (extra [ray]); auto = a running cluster, else a local one')
    p.add_argument('--workers', type=NumberType(int, 1, 100_000),
                   help='with --ray: encoding tasks in parallel (default: cluster CPUs)')
    p.add_argument('--no-poses', action='store_true', help='build without poses (no pose topic needed)')
    p.add_argument('--no-thumbnails', action='store_true', help='do not store preview images')
    p.add_argument('--local-features', choices=[*KINDS, 'none'], default=LocalFeatureConfig.kind,
                   help='local features stored per place for geometric verification (default rootsift)')
    _param_option(p, '--max-keypoints', 'local_features.max_keypoints', help='local features per place')
    p.add_argument('--camera-info', help='ROS camera_info YAML of the map images (stored in the map; '
                   'lets verification use the essential matrix and recover relative poses)')
    p.add_argument('--vocabulary', metavar='PATH', help='take the vocabulary/PCA from this map or vocabulary '
                   'file instead of fitting it on the source (same encoder configuration required)')
    p.set_defaults(func=cmd_build_map)

    p = sub.add_parser('merge-maps', help='merge maps of one encoder into one map, keeping sessions',
                       description='Merge maps built with the same encoder (identity and fitted state must '
                                   'match) into one map; each input stays a session (place id range, own '
                                   'pose frame) recorded in map.yaml. Written atomically.')
    p.add_argument('maps', nargs='+', help='two or more map directories')
    p.add_argument('--out', required=True, help='merged map directory (replaced atomically)')
    p.add_argument('--names', nargs='+', help='session names, one per map (default: directory names)')
    p.set_defaults(func=cmd_merge_maps)

    p = sub.add_parser('evaluate', help='Recall@N of query frames against a map, with a report',
                       description='Localise every query frame against the map and report Recall@1/5/10 '
                                   'within a distance (and optional yaw) threshold, timings, results.json '
                                   'and PNG plots.')
    p.add_argument('--map', help='map directory (not with --loops)')
    p.add_argument('--queries', required=True, help='rosbag2 or image folder with ground-truth poses')
    _add_source_args(p)
    _add_encoder_args(p, with_name=False)
    g = p.add_argument_group('loops within one traversal (--loops: the map grows from empty, as the node\'s '
                             'incremental mode; closures with and without geometric verification)')
    g.add_argument('--loops', action='store_true',
                   help='evaluate loop closures within the --queries traversal')
    g.add_argument('--encoder', default=None,
                   help=f'encoder of the grown map (--loops only; default {DEFAULT_ENCODER})')
    add_setting_options(g, LoopClosureConfig, '--',
                        only=('min_score', 'min_time_separation', 'consistency_frames', 'verified_frames'))
    _param_option(g, '--keyframe-interval', 'keyframe.min_interval', help='keyframe.min_interval [s]')
    add_setting_options(g, VerificationConfig, '--verify-', only=('top_k',))
    g.add_argument('--local-features', choices=list(KINDS), default=LocalFeatureConfig.kind)
    _param_option(g, '--max-keypoints', 'local_features.max_keypoints', help='local features per place')
    g.add_argument('--camera-info',
                   help='ROS camera_info YAML of the camera (essential matrix, relative pose)')
    g.add_argument('--also-dist', type=DIST, nargs='*', default=[], metavar='M',
                   help='further distance thresholds [m] the same closures are scored at')
    from vpr_ros.slam.graph import KERNEL_PARAMETERS, PoseGraphConfig
    from vpr_ros.slam.odometry import DriftModel

    g = p.add_argument_group('pose graph (--loops --pose-graph: odometry + the published closures optimised '
                             'with GTSAM, ATE/RPE before and after with evo; docs/pose-graph.md)')
    g.add_argument('--pose-graph', action='store_true',
                   help='run the pose-graph experiment (needs --camera-info)')
    g.add_argument('--odometry-topic', help='use this odometry topic of the bag (instead of drifting the '
                                            'ground truth); the --pose-topic stays the ground truth')
    g.add_argument('--drift-translation', type=NumberType(float, 0.0, 10.0, low_open=True),
                   default=DriftModel.translation_sigma, metavar='S',
                   help='forward/lateral error per step, std = S*sqrt(step metres) '
                        f'(default {DriftModel.translation_sigma})')
    g.add_argument('--drift-yaw', type=NumberType(float, 0.0, 90.0, low_open=True),
                   default=DriftModel.yaw_sigma_deg, metavar='DEG',
                   help='heading error per step, std = DEG*sqrt(step metres) '
                        f'(default {DriftModel.yaw_sigma_deg})')
    g.add_argument('--drift-seed', type=SEED, default=DriftModel.seed,
                   help='seed of the drift and of the injected false closure')
    g.add_argument('--robust-kernel', choices=list(KERNEL_PARAMETERS), default=PoseGraphConfig.robust_kernel,
                   help='kernel on the loop-closure factors (default %(default)s)')
    g.add_argument('--direction-only-closures', action='store_true',
                   help='every closure direction-only, even where the node would publish a metric one')
    p.add_argument('--top-k', type=NumberType(int, 1, 1_000_000_000), default=10,
                   help='candidates retrieved per query')
    p.add_argument('--dist', type=DIST, default=25.0, help='positive distance threshold [m]')
    p.add_argument('--yaw', type=YAW, default=None, help='optional heading threshold [deg]')
    _param_option(p, '--threads', 'threads', help='torch threads (0 = adapt to the free cores)')
    p.add_argument('--out', help='report folder (results.json + PNGs)')
    _add_verify_arg(p)
    add_sequence_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('map-info', help='print what a map holds')
    p.add_argument('map')
    p.add_argument('--json', action='store_true')
    _add_verify_arg(p)
    p.set_defaults(func=cmd_map_info)

    p = sub.add_parser('export-vocabulary', help="write a map's fitted vocabulary/PCA to a .npz file",
                       description='Write what the encoder fitted on MAP (VLAD/BoW vocabulary, PCA) and the '
                                   "encoder identity to OUT (.npz, no pickle), for the node's "
                                   'vocabulary.path '
                                   'or build-map --vocabulary.')
    p.add_argument('map')
    p.add_argument('out')
    p.set_defaults(func=cmd_export_vocabulary)

    p = sub.add_parser('node-params', help="print a params file for the localizer node at its defaults",
                       description='Print a ROS 2 params file with every parameter of the localizer node at '
                                   'its default, one comment per parameter; a pip install has no copy of '
                                   'config/localize.yaml: `vpr-ros node-params > localize.yaml`, then '
                                   '`python -m vpr_ros.localizer --ros-args --params-file localize.yaml`.')
    p.set_defaults(func=cmd_node_params)

    p = sub.add_parser('encoders', help='list encoders: dim, input size, parameters, bytes per place')
    p.add_argument('names', nargs='*')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_encoders)

    p = sub.add_parser('export-onnx', help='export an encoder to ONNX and verify it with onnxruntime')
    p.add_argument('name')
    p.add_argument('out')
    p.add_argument('--batch', type=NumberType(int, 1, 100_000), default=1)
    _add_encoder_args(p, with_name=False)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser('explain', help='render BoQ cross-attention maps over an image (PNG)')
    p.add_argument('image')
    p.add_argument('--out', default='boq_attention.png')
    _add_encoder_args(p, with_name=False)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        'train', help="train an encoder's head on your own recordings (places from poses)",
        description='Train a zoo encoder (boq, mixvpr, netvlad, salad, megaloc, convap, cosplace, gem, avg) '
                    'on one or more sessions of the same area, all posed in one frame. Backbone frozen '
                    '(EfficientNet-Lite0 with ImageNet weights unless backbone_weights is given), its '
                    'features cached on disk; multi-similarity loss; Recall@1/5 on a held-out stretch of '
                    'the route every epoch; RUN_DIR/best.pth loads with --set weights=RUN_DIR/best.pth '
                    '(or --config RUN_DIR/encoder.yaml).')
    p.add_argument('--source', action='append', required=True,
                   help='bag or image folder (repeat for sessions)')
    p.add_argument('--encoder', required=True, help='encoder whose head is trained')
    p.add_argument('--out', required=True, help='run directory')
    p.add_argument('--config', help='YAML with training settings and encoder settings')
    p.add_argument('--set', action='append', metavar='KEY=VALUE', help='one training or encoder setting')
    p.add_argument('--resume', action='store_true', help='continue the run in --out after its last epoch')
    p.add_argument('--seed', type=SEED)
    p.add_argument('--epochs', type=NumberType(int, 1, 1_000_000))
    p.add_argument('--pos-dist', type=DIST, help='positives within this distance [m] (default 10)')
    p.add_argument('--pos-yaw', type=YAW, help='... and this heading difference [deg] (default 45)')
    p.add_argument('--neg-dist', type=DIST, help='negatives beyond this distance [m] (default 25)')
    _add_source_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('replay', help='play a bag over DDS to the localizer node and evaluate its outputs',
                       description='Start (or connect to) the localizer node, play the bag images and /clock '
                                   'over DDS, record every output and write results.json + plots.')
    _add_replay_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('demo', help='the whole job on the sample world: data, map, evaluation, live replay')
    p.add_argument('--out', default='demo_out')
    p.add_argument('--encoder', default=DEFAULT_ENCODER)
    p.add_argument('--scale', type=SCALE, default=1.0, help='sample world scale')
    p.add_argument('--no-replay', action='store_true', help='skip the live ROS replay')
    p.set_defaults(func=cmd_demo)
    for action in sub._choices_actions:  # every subcommand: a description and its defaults in --help
        command = sub.choices[action.dest]
        command.formatter_class = _DefaultsHelpFormatter
        if not command.description and action.help:
            command.description = action.help[0].upper() + action.help[1:] + '.'
    return parser


# Where each subcommand writes (maps: check_save_target; vocabularies: export_vocabulary's own check).
OUTPUTS: dict[str, tuple[str, str]] = {'sample': ('out', 'folder'), 'evaluate': ('out', 'folder'),
                                       'train': ('out', 'folder'), 'replay': ('out', 'folder'),
                                       'demo': ('out', 'folder'), 'export-onnx': ('out', 'file'),
                                       'explain': ('out', 'file')}


def check_output(path: str | None, kind: str) -> None:
    """Before any work: a ``folder`` output must not be an existing file, a ``file`` output not an existing
    directory, and the nearest existing ancestor must be a directory we may write in (one line, exit 2,
    instead of a traceback after the work)."""
    if not path:
        return
    if kind == 'folder' and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f'{path} exists and is not a folder: name a folder for the output')
    if kind == 'file' and os.path.isdir(path):
        raise ConfigError(f'{path} is a directory: name the file to write')
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f'cannot write {path}: {parent} is not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f'cannot write {path}: permission denied in {parent}')


def main(argv: list[str] | None = None) -> int:
    # Before anything imports numpy/torch/faiss: a missing package is one line, not a traceback.
    if deps.require('vpr-ros'):
        return deps.EXIT_MISSING
    parser = build_parser()
    # Known args first: for a command that needs a missing package (replay without rclpy), the package,
    # not an unknown option, is what the user must hear about.
    args, unknown = parser.parse_known_args(argv)
    if args.command == 'replay' and deps.require('vpr-ros replay', ros=True):
        return deps.EXIT_MISSING
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='[%(levelname)s] %(name)s: %(message)s')
    logging.getLogger('faiss').setLevel(logging.WARNING)  # its loader logs every CPU-feature probe
    try:
        if args.command in OUTPUTS:
            attr, kind = OUTPUTS[args.command]
            check_output(getattr(args, attr, None), kind)
        return int(args.func(args) or 0)
    except VprError as exc:
        print(f'vpr-ros {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'vpr-ros {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())

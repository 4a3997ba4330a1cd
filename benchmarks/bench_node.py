"""Localizer node figures: end-to-end latency and sustained throughput at 10 Hz and 30 Hz camera input.

The node runs as a subprocess with ``--encoder`` (default effnet_gem; ``--config`` YAML overrides,
``--dtype``) on a map of ``--places`` places; a
publisher in this process sends 640x480 rgb8 images at the given rate (wall-clock paced) and
records ``~/candidates`` with receipt times. Printed per rate: frames published / answered /
dropped by the node, throughput, end-to-end latency (publish -> candidates receipt) and the node's
own per-frame processing time (decode + encode + search + publish, from /diagnostics), and its
ratio to the core pipeline (target <= 1.1): to ``Localizer.localize`` timed inside the node on the
same frames (what the ROS shell adds), and to ``Localizer.localize`` run alone in this process.
Prints a table; no pass/fail. A fresh node per rate keeps the statistics separate. The same node
beside 1 and 2 competing busy processes (a shared CPU): benchmarks/bench_contention.py.

    .venv/bin/python benchmarks/bench_node.py [--rates 10 30] [--seconds 10] [--places 1000]
        [--encoder segvlad --config '{pca_dim: 256}' --dtype float16]
        [--verification [--default-filter]] [--sequence-length 10]

``--verification`` stores RootSIFT local features with every place (places beyond the 20 real
images reuse theirs) and sets the loop-closure filter so that EVERY frame verifies its top
``verification.top_k`` (3) candidates (min_score -1, no time separation, no consistency, no rate
cap): the worst case of a robot driving through a revisited area. With ``--default-filter`` the
node keeps its default loop-closure filter (consistency streak, 1 Hz cap) and the query frames
revisit the map in order, so frames verify as often as the defaults let them on a real revisit.
Verification runs in the node's loop-closure thread, beside the worker that answers frames; the
frames that stage had to drop are printed.
``--sequence-length N`` turns
on sequence matching (node ``sequence.length``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from vpr_ros.encoders import create_encoder  # noqa: E402
from vpr_ros.encoders.base import l2_normalize  # noqa: E402
from vpr_ros.features import LocalFeatureConfig, extract  # noqa: E402
from vpr_ros.frames import Pose  # noqa: E402
from vpr_ros.localization import Localizer  # noqa: E402
from vpr_ros.mapdb.local_features import LocalFeatureStore  # noqa: E402
from vpr_ros.mapdb.store import VprMap  # noqa: E402
from vpr_ros.matching.sequence import SequenceConfig  # noqa: E402

DEFAULT_ENCODER = 'effnet_gem'


def frames(n: int, seed: int = 0, size: tuple[int, int] = (480, 640),
           texture: bool = False) -> list[np.ndarray]:
    """Smooth random colour fields: distinct, cheap to make, camera-sized; ``texture`` adds blobs
    and boxes so local features find hundreds of keypoints."""
    import cv2

    rng = np.random.default_rng(seed)
    out = [cv2.resize((rng.random((6, 8, 3)) * 255).astype(np.float32), size[::-1],
                      interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8) for _ in range(n)]
    if texture:
        for img in out:
            for _ in range(300):
                x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
                colour = [int(c) for c in rng.integers(0, 256, 3)]
                cv2.circle(img, (x, y), int(rng.integers(3, 15)), colour, -1)
    return out


def build_map(path: str, images: list[np.ndarray], places: int, encoder_name: str, config: dict,
              dtype: str, local_features: bool = False) -> None:
    """Real descriptors for ``images`` (the encoder fitted on them if it learns from the map), random
    unit vectors for the remaining places, as many per place as the real ones have (search cost only)."""
    encoder = create_encoder(encoder_name, config)
    if encoder.requires_fit:
        encoder.fit(images)
    vmap = VprMap.empty(encoder.identity(), dtype=dtype, encoder_state=encoder.get_state())
    feats = []
    if local_features:
        vmap.local_features = LocalFeatureStore(LocalFeatureConfig())
        feats = [extract(img) for img in images]
    real = encoder.describe(images)
    per_place = max(1, int(round(np.mean([len(v) for v in real]))))
    rng = np.random.default_rng(1)
    for i in range(places):
        vectors = real[i] if i < len(real) else l2_normalize(rng.standard_normal((per_place, encoder.dim)))
        vmap.add(float(i), Pose.from_xy_yaw(float(i), 0.0, 0.0), vectors,
                 features=feats[i % len(feats)] if feats else None)
    vmap.save(path)


def core_ms(map_path: str, images: list[np.ndarray], repeats: int, threads: int,
            sequence_length: int = 0) -> float:
    """Localizer.localize in this process with the node's settings (sequence matching included)."""
    localizer = Localizer.from_map(map_path, {'threads': threads} if threads else None,
                                   sequence=SequenceConfig(length=sequence_length))
    localizer.localize(images[0], 0.0)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        localizer.localize(images[i % len(images)], float(i))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def run_rate(map_path: str, images: list[np.ndarray], rate: float, seconds: float, tmp: str,
             params: list[str]) -> dict[str, float]:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray

    from vpr_ros.ros.messages import to_sec, to_time
    from vpr_ros.ros.replay import Recording, Session, start_node, stop_node

    proc = start_node(map_path, os.path.join(tmp, f'node_{rate:g}.log'), sim_time=False, params=params,
                      remaps=['image:=/camera/image_raw'])
    session = Session()
    recording = Recording()
    try:
        node = session.node
        pub = node.create_publisher(Image, '/camera/image_raw', 10)
        subs = [node.create_subscription(Float64MultiArray, '/vpr_localizer/candidates',
                                         recording.on_candidates, 1000),
                node.create_subscription(DiagnosticArray, '/diagnostics',
                                         recording.diagnostics_callback('/vpr_localizer'), 1000)]
        deadline = time.monotonic() + 120
        while not (pub.get_subscription_count() and subs[0].get_publisher_count()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'node did not come up (see {tmp}/node_{rate:g}.log)')
            time.sleep(0.05)
        msgs = []
        for rgb in images:
            h, w = rgb.shape[:2]
            msgs.append(Image(height=h, width=w, encoding='rgb8', step=3 * w, data=rgb.tobytes()))
        published: dict[float, float] = {}
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = msgs[i % len(msgs)]
            msg.header.stamp = to_time(1000.0 + i / rate)
            pub.publish(msg)
            published[to_sec(msg.header.stamp)] = time.monotonic()  # the float the node reports back
        end = time.monotonic()
        time.sleep(2.5)  # let the last frame finish and one more diagnostics message arrive
    finally:
        session.close()
        stop_node(proc)
    answered = {t: rx for t, (rx, _) in recording.candidates.items() if t in published}
    latency = np.array([(rx - published[t]) * 1e3 for t, rx in answered.items()])
    diag = recording.diagnostics
    return {'published': len(published), 'received': int(diag.get('frames_received', -1)),
            'answered': len(answered),
            'dropped': int(diag.get('frames_dropped', -1)),
            'throughput_hz': len(answered) / (end - start),
            'latency_p50': float(np.percentile(latency, 50)),
            'latency_p95': float(np.percentile(latency, 95)),
            'processing_p50': float(diag.get('processing_p50_ms', 'nan')),
            'processing_p95': float(diag.get('processing_p95_ms', 'nan')),
            'localize_p50': float(diag.get('localize_p50_ms', 'nan')),
            'verification_p50': float(diag.get('verification_p50_ms', 'nan')),
            'verified_frames': int(diag.get('loop_status.loop_detected', 0))
            + int(diag.get('loop_status.failed_geometric_verification', 0)),
            'loop_closures': int(diag.get('loop_closures_published', 0)),
            'loop_stage_dropped': int(diag.get('loop_closure.frames_dropped', 0))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rates', type=float, nargs='+', default=[10.0, 30.0])
    parser.add_argument('--seconds', type=float, default=10.0, help='input duration per rate')
    parser.add_argument('--places', type=int, default=1000, help='map size')
    parser.add_argument('--encoder', default=DEFAULT_ENCODER, help='encoder of the map the node runs')
    parser.add_argument('--config', default='{}',
                        help="encoder config overrides as YAML, e.g. '{pca_dim: 256}'")
    parser.add_argument('--dtype', choices=['float32', 'float16'], default='float32',
                        help='map descriptor storage')
    parser.add_argument('--repeats', type=int, default=40, help='core pipeline timing repeats')
    parser.add_argument('--threads', type=int, default=0, help='torch threads in the node and the core run '
                        '(0 = torch default)')
    parser.add_argument('--verification', action='store_true',
                        help='local features in the map and every frame verifying its top 3 candidates')
    parser.add_argument('--default-filter', action='store_true',
                        help='with --verification: the node\'s default loop-closure filter, not every frame')
    parser.add_argument('--sequence-length', type=int, default=0, help='node sequence.length (0 = off)')
    parser.add_argument('--best-effort', action='store_true',
                        help='keep the default sensor-data (BEST_EFFORT) image subscription; by default the '
                             'benchmark overrides it to RELIABLE, since 0.9 MB frames over best-effort UDP '
                             'lose fragments on default Linux socket buffers')
    args = parser.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    images = frames(20, texture=args.verification)
    with tempfile.TemporaryDirectory(prefix='bench_node_') as tmp:
        map_path = os.path.join(tmp, 'map')
        build_map(map_path, images, args.places, args.encoder, yaml.safe_load(args.config) or {}, args.dtype,
                  args.verification)
        core = core_ms(map_path, images, args.repeats, args.threads, args.sequence_length)
        verification_mode = ('off' if not args.verification
                             else 'default filter' if args.default_filter else 'every frame, top 3')
        print(f'encoder {args.encoder} {args.config}, {args.dtype} map of {args.places} places, '
              '640x480 rgb8 input, '
              f'{os.cpu_count()} CPUs, torch threads {args.threads or "default"}, '
              f'image reader {"BEST_EFFORT" if args.best_effort else "RELIABLE"}, '
              f'verification {verification_mode}, '
              f'sequence length {args.sequence_length}; load {os.getloadavg()[0]:.1f}')
        print(f'core pipeline Localizer.localize: {core:.1f} ms/frame (median of {args.repeats})')
        print(f"{'input':>7} {'sent':>5} {'received':>8} {'answered':>8} {'dropped':>7} {'out Hz':>7} "
              f"{'e2e p50':>8} {'e2e p95':>8} {'node p50':>9} {'node p95':>9} {'in-node localize p50':>21} "
              f"{'ratio':>6} {'vs core':>7}")
        for rate in args.rates:
            params = [f'threads:={args.threads}', f'sequence.length:={args.sequence_length}'] + (
                [] if args.best_effort
                else ['qos_overrides./camera/image_raw.subscription.reliability:=reliable'])
            if args.verification and not args.default_filter:
                params += ['loop_closure.min_score:=-1.0', 'loop_closure.min_time_separation:=0.0',
                           'loop_closure.consistency_frames:=1', 'loop_closure.max_rate_hz:=0.0']
            r = run_rate(map_path, images, rate, args.seconds, tmp, params)
            print(f"{rate:5.0f}Hz {r['published']:5d} {r['received']:8d} {r['answered']:8d} "
                  f"{r['dropped']:7d} "
                  f"{r['throughput_hz']:7.1f} {r['latency_p50']:6.1f}ms {r['latency_p95']:6.1f}ms "
                  f"{r['processing_p50']:7.1f}ms {r['processing_p95']:7.1f}ms {r['localize_p50']:19.1f}ms "
                  f"{r['processing_p50'] / r['localize_p50']:6.2f} {r['processing_p50'] / core:7.2f}")
            if args.verification:
                print(f"       verification: {r['verified_frames']} frames verified, "
                      f"{r['verification_p50']:.1f} ms p50 per candidate, {r['loop_closures']} closures "
                      f"published, {r['loop_stage_dropped']} frames dropped by the loop-closure stage")
    print('e2e = image publish -> ~/candidates receipt (wall); node = decode+encode+search+publish per frame '
          '(node /diagnostics); ratio = node p50 / Localizer.localize p50 timed inside the node on the same '
          'frames (robust to other load); vs core = node p50 / the in-process core median above')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Re-run of the issue-11 hostile-input campaign: seeded, prints what it found (exit 1 if anything).

Parts (``--parts``, all by default), each counting *findings*: behaviour the issue ruled out. A Python
warning printed for bad input (e.g. numpy's RuntimeWarning) is a finding everywhere: bad input gets
one line or a counted skip, not noise per frame.

* ``decoder``: random raw ``sensor_msgs/Image`` fields (any encoding string, sizes, steps up to 2^62,
  short or long buffers) and corrupted JPEG/PNG bytes (bit flips, truncation, forged header sizes)
  through ``msg_to_rgb``. Finding: any exception other than ImageDecodeError, an array that is not a
  C-contiguous uint8 HxWx3 within max_image_pixels, or > 200 MB of heap growth in one case.
* ``node``: the localizer node (private rclpy context) fed ``--node-frames`` bad frames with one of 5
  real frames after every 9, one at a time through its image callback. Finding: a frame neither
  answered nor counted as a skip within 30 s, a "processing error" skip (a failure the node did not
  recognise), a real frame not answered or answered differently from the first time, or the node's
  worker thread gone.
* ``params``: every node parameter set to its range ends, values just outside them, NaN/inf and
  wrong types, at start-up and at run time (as ``ros2 param set`` does). Finding: a crash, a
  traceback, a bad value accepted, or a good one refused.
* ``bags``: bit flips, truncations and zeroed pages of a sqlite3 and an mcap bag, then ``build-map``.
* ``maps``: corruptions of every map file (bit flips, truncation, empty file, a non-UTF-8 byte,
  broken map.yaml fields, reversed owners, NaN descriptors), then ``map-info``, ``evaluate`` and the
  localizer node's start-up. Finding (bags and maps): an uncaught exception or a traceback on stderr,
  an exit other than 0 or 2, an exit 2 without exactly one ``error:`` line, ``evaluate`` exiting 0
  with a Recall@1 that differs from the intact map's, or the node starting on a map ``evaluate``
  refuses (or refusing one it accepts). The report lists the error lines users read, by kind.
* ``kills``: ``build-map`` over an existing map killed with SIGKILL, every other time at a random
  moment, otherwise during its save. Finding: no loadable map at the path afterwards, or a stale
  ``.NAME.tmp-*``/``.NAME.old-*`` sibling left after the next build.
* ``soak``: the node as a subprocess over real DDS on a map of the default encoder, fed 30 Hz of
  bad raw images with every third frame a real one for ``--soak-seconds`` (600). Finding: the node
  exiting, a frame it received but neither processed, dropped (newest frame wins) nor counted as
  a skip, a "processing error" skip, resident memory growing by more than 1 MB/min after the first
  minute, a traceback or Python warning in its log, or SIGINT taking more than 5 s or exiting non-zero.

Issue-23 families of inputs and callbacks (each seeded, and time-bounded by ``--part-seconds``, 300 s):

* ``yaml``: alias/merge bombs, recursive aliases, deep nesting, >1 MiB documents, python tags and broken
  syntax through ``--set``, ``--config``, map.yaml and the node's ``encoder_config``. Finding: not refused
  with exit 2 and one error line (the node: not refused at start-up), > 5 s or > 200 MB for a case, an error
  longer than 400 characters.
* ``cli_ranges``: every numeric option of every subcommand x {nan, inf, -inf, -1, 0, 1e30, 10^30}; values
  in range run for real (build-map, evaluate) or are parsed. Finding: a bare int/float option, a refused
  value without exit 2 and one error line naming the option, a non-finite value accepted, a traceback.
* ``metadata``: sqlite3 and mcap bags whose metadata.yaml counts are 0, 1, half, one less, 10^12, 2^63-1,
  through build-map, evaluate and train's feature cache. Finding: places, Recall@1 or cached frames
  different from the true-count run, > 500 MB for a case.
* ``poses``: NaN/inf/1e300 in random odometry fields of a bag and rows of a poses.csv, zero and denormal
  quaternions; the incremental node fed bad odometry. Finding: build-map not exit 0, places missing or
  a NaN position in the map, a Python warning, a node processing error.
* ``callbacks``: every callback the node registered (subscriptions incl. rclpy's /clock, services incl.
  the parameter services, both parameter callbacks, timers) and its loop-closure thread made to fail with
  a random exception, called as the executor calls them. Finding: an exception reaching the caller, a
  failure not counted, a frame not answered or no diagnostics published afterwards.
* ``readers``, ``diskfull``, ``foreign``, ``specs``, ``fitmem`` (issue 23, each bounded by
  ``--map-seconds``): see benchmarks/hostile_maps.py: loads racing saves (a mixed or refused load),
  saves onto a full tmpfs (anything but one line naming the cause with the old map intact),
  build-map/save onto folders that are not maps (a changed file, or a refusal after the encoder
  was created), random edge index specs in child processes (a crash, a traceback, an accepted spec
  that cannot search), and the memory build-map's vocabulary fit holds for 4K frames.

Work files (sample bags, maps) go to ``--work`` (default ``$TMPDIR/vpr_campaign``) and are reused;
nothing is downloaded. Run ROS parts with an isolated ``ROS_DOMAIN_ID``.

    .venv/bin/python benchmarks/campaign_hostile.py [--parts decoder node params bags maps kills soak
        yaml cli_ranges metadata poses callbacks]
        [--seed 0]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vpr_ros.errors import ImageDecodeError  # noqa: E402
from vpr_ros.frames import SUPPORTED_ENCODINGS, msg_to_rgb  # noqa: E402

MAX_PIXELS = 1 << 20
ENCODER = ['--encoder', 'raw_pixels', '--set', 'pca_dim=16']  # fast, and it has fitted state


class Msg:
    """A message-shaped object: the decoders read attributes only."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning a user would see (all threads), each time: not the deprecation notices Python hides."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
            warnings.simplefilter('ignore', category)
        yield caught


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 1e6


def _encoded(rng: np.random.Generator) -> dict[str, bytes]:
    import cv2

    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return {ext: cv2.imencode(ext, img)[1].tobytes() for ext in ('.jpg', '.png')}


def hostile_message(rng: np.random.Generator, encoded: dict[str, bytes]) -> Msg:
    """One random bad (or accidentally valid) image message, raw or compressed."""
    if rng.random() < 0.5:
        h, w = (int(v) for v in rng.integers(-2, 90, 2))
        if rng.random() < 0.1:  # a huge declared size over a small buffer
            h, w = (int(rng.choice([h, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1])) for _ in range(2))
        enc = str(rng.choice(SUPPORTED_ENCODINGS)) if rng.random() < 0.8 else rng.bytes(4).hex()
        step = int(rng.choice([rng.integers(-5, 400), 2 ** 32 - 1, rng.integers(0, 2 ** 62)]))
        size = int(rng.integers(0, 30000))
        return Msg(height=h, width=w, encoding=enc, step=step, is_bigendian=bool(rng.integers(2)),
                   data=rng.bytes(size))
    kind = str(rng.choice(sorted(encoded)))
    data = bytearray(encoded[kind])
    for _ in range(int(rng.integers(0, 8))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    if rng.random() < 0.3:
        data = data[:int(rng.integers(len(data) + 1))]
    if rng.random() < 0.3:  # forge the declared size (20000x20000-style claims): JPEG SOF0, PNG IHDR
        at = data.find(b'\xff\xc0') + 5 if kind == '.jpg' else data.find(b'IHDR') + 4
        if at >= 5 and at + 8 <= len(data):
            size = 4 if kind == '.jpg' else 8
            data[at:at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return Msg(format=kind.lstrip('.'), data=bytes(data))


def part_decoder(seed: int, cases: int) -> dict[str, Any]:
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    encoded = _encoded(rng)
    findings: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    worst_ms, worst_mb = 0.0, 0.0
    for _ in tqdm(range(cases), desc='decoder', mininterval=2):
        msg = hostile_message(rng, encoded)
        before = _rss_mb()
        t0 = time.perf_counter()
        with recorded_warnings() as caught:
            try:
                rgb = msg_to_rgb(msg, MAX_PIXELS)
            except ImageDecodeError as exc:
                outcomes[exc.kind] += 1
            except Exception as exc:  # noqa: BLE001 - that is the finding
                findings[f'{type(exc).__name__}: {str(exc)[:80]}'] += 1
            else:
                outcomes['decoded'] += 1
                if not (rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
                        and rgb.flags.c_contiguous and rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS):
                    findings[f'bad array {rgb.dtype} {rgb.shape}'] += 1
        for w in caught:  # printed on stderr for a bad frame: noise the node did not mean to make
            findings[f'{w.category.__name__}: {str(w.message)[:80]} ({_encoding(msg)})'] += 1
        worst_ms = max(worst_ms, (time.perf_counter() - t0) * 1e3)
        grown = _rss_mb() - before
        worst_mb = max(worst_mb, grown)
        if grown > 200:
            findings['> 200 MB for one message'] += 1
    return {'cases': cases, 'outcomes': dict(outcomes), 'worst_ms': round(worst_ms, 1),
            'worst_rss_growth_mb': round(worst_mb, 1), 'findings': dict(findings)}


def _encoding(msg: Msg) -> str:
    return getattr(msg, 'encoding', None) or getattr(msg, 'format', '?')


def _as_ros(msg: Msg, t: float) -> Any:
    from sensor_msgs.msg import CompressedImage, Image

    from vpr_ros.ros.messages import to_time

    if hasattr(msg, 'format'):
        out = CompressedImage(format=msg.format, data=msg.data)
    else:  # the ROS types refuse out-of-range fields themselves; send what a wire message can hold
        out = Image(height=max(0, msg.height) % 2 ** 32, width=max(0, msg.width) % 2 ** 32,
                    encoding=msg.encoding, is_bigendian=int(msg.is_bigendian),
                    step=max(0, msg.step) % 2 ** 32, data=msg.data)
    out.header.stamp = to_time(t)
    return out


def part_node(seed: int, bad_frames: int, work: str) -> dict[str, Any]:
    """``bad_frames`` hostile frames, and after every 9 of them one of 5 real frames, one at a time."""
    import rclpy
    from rclpy.parameter import Parameter
    from tqdm import tqdm

    from vpr_ros.ros.node import LocalizerNode

    data = _sample(work)
    rng = np.random.default_rng(seed)
    encoded = _encoded(rng)
    real = _real_messages(os.path.join(data, 'query'), 5)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    node = LocalizerNode(context=ctx, parameter_overrides=[
        Parameter('map_path', value=_clean_map(work)), Parameter('threads', value=1),
        Parameter('max_image_pixels', value=MAX_PIXELS)])
    findings: Counter[str] = Counter()
    answers: dict[int, list[int]] = {}
    published: list[list[int]] = []
    original = node._publish

    def publish(stamp: Any, t: float, matches: list) -> None:
        published.append([m.place_id for m in matches])
        original(stamp, t, matches)

    def seen() -> int:
        return node._skips.total + node._processed + node._rate_limited

    node._publish = publish
    frames = bad_frames + bad_frames // 9
    t = 1000.0
    try:
        with recorded_warnings() as caught:  # the worker thread's warnings too
            for i in tqdm(range(frames), desc='node', mininterval=2):
                t += 1.0
                real_key = (i // 10) % len(real) if i % 10 == 9 else None
                msg = hostile_message(rng, encoded) if real_key is None else real[real_key]
                before, answered = seen(), len(published)
                node._on_image(_as_ros(msg, t))
                deadline = time.monotonic() + 30
                while seen() == before and time.monotonic() < deadline and node._worker.is_alive():
                    time.sleep(0.002)
                if not node._worker.is_alive():
                    findings['worker thread died'] += 1
                    break
                if seen() == before:
                    findings['frame neither answered nor counted in 30 s'] += 1
                    continue
                if real_key is not None:
                    if len(published) == answered:
                        findings['real frame not answered'] += 1
                    elif answers.setdefault(real_key, published[-1]) != published[-1]:
                        findings['real frame answered differently'] += 1
        for w in caught:
            findings[f'{w.category.__name__}: {str(w.message)[:80]}'] += 1
        skips = node._skips.as_dict()
        findings.update({k: v for k, v in skips.items() if k.startswith('processing error')})
        return {'frames': frames, 'bad': bad_frames, 'real': frames - bad_frames,
                'processed': node._processed, 'answered': len(published), 'skips': skips,
                'findings': dict(findings)}
    finally:
        node.destroy_node()
        ctx.try_shutdown()


def _real_messages(bag: str, n: int) -> list[Msg]:
    from vpr_ros.sources import open_source

    src = open_source(bag)
    out = []
    for frame in src.frames():
        rgb = np.ascontiguousarray(frame.rgb)
        out.append(Msg(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                       is_bigendian=False, data=rgb.tobytes()))
        if len(out) == n:
            break
    return out


def _sample(work: str) -> str:
    from vpr_ros.sample import generate_sample

    data = os.path.join(work, 'sample')
    if not os.path.isdir(os.path.join(data, 'query')):
        generate_sample(data, scale=0.15, traversals=('mapping', 'query'), progress=False)
        generate_sample(os.path.join(work, 'sample_mcap'), scale=0.15, traversals=('query',), storage='mcap',
                        progress=False)
    return data


def _clean_map(work: str) -> str:
    path = os.path.join(work, 'clean_map')
    if not os.path.isdir(path):
        source = os.path.join(_sample(work), 'mapping')
        rc, err = cli(['build-map', '--source', source, '--out', path, *ENCODER])
        assert rc == 0, err
    return path


def cli(argv: list[str]) -> tuple[int | str, str]:
    """vpr-ros in this process; an exception that escapes main() is what the user sees as a traceback.

    main() calls logging.basicConfig, which binds the root handler to the stderr of the first call:
    drop it each time so this call's logging lands in this call's captured stderr.
    """
    from vpr_ros.cli import main

    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc: int | str = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
        except Exception as exc:  # noqa: BLE001 - that is the finding
            rc = f'traceback {type(exc).__name__}: {str(exc)[:100]}'
    return rc, err.getvalue()


WARNING_LINE = re.compile(r'\b(\w+Warning): (.*)')


def judge_cli(what: str, rc: int | str, err: str, exits: Counter[str], errors: Counter[str],
              findings: Counter[str]) -> None:
    """Count one CLI run: its exit, its one error line; a traceback, a Python warning or an exit 2
    without exactly one ``error:`` line is a finding."""
    exits[str(rc) if isinstance(rc, int) else 'traceback'] += 1
    lines = [line for line in err.splitlines() if ': error: ' in line]
    if not isinstance(rc, int) or 'Traceback (most recent call last)' in err:
        findings[f'{what}: {rc if not isinstance(rc, int) else err.strip().splitlines()[-1][:100]}'] += 1
    elif rc == 2 and len(lines) != 1:
        findings[f'{what}: exit 2 with {len(lines)} error lines'] += 1
    elif rc not in (0, 2):
        findings[f'{what}: exit {rc}'] += 1
    for line in lines:  # the message without file names or numbers: what kinds of errors users read
        errors[re.sub(r'\S*/\S*|\d+', '#', line.partition(': error: ')[2])[:90]] += 1
    for m in WARNING_LINE.finditer(err):
        findings[f'{what}: {m.group(1)}: {m.group(2)[:80]}'] += 1


def _r_at_1(out_dir: str) -> float | None:
    def find(o: Any) -> float | None:
        if isinstance(o, dict):
            if 'R@1' in o:
                return o['R@1']
            for v in o.values():
                if (r := find(v)) is not None:
                    return r
        return None
    with open(os.path.join(out_dir, 'results.json')) as f:
        return find(json.load(f))


def _flip(path: str, rng: random.Random, n: int) -> None:
    data = bytearray(open(path, 'rb').read())
    for _ in range(n):
        if data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    open(path, 'wb').write(data)


def _truncate(path: str, rng: random.Random) -> None:
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(rng.randrange(size) if size else 0)


def part_bags(seed: int, cases: int, work: str) -> dict[str, Any]:
    from tqdm import tqdm

    rng = random.Random(seed)
    bags = [os.path.join(_sample(work), 'query'), os.path.join(work, 'sample_mcap', 'query')]
    findings: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for i in tqdm(range(cases), desc='bags', mininterval=2):
        bag = os.path.join(work, 'bad_bag')
        shutil.rmtree(bag, ignore_errors=True)
        shutil.copytree(bags[i % 2], bag)
        files = [os.path.join(bag, f) for f in os.listdir(bag) if f.endswith(('.db3', '.mcap', '.yaml'))]
        target = rng.choice(files)
        how = rng.choice(['flip', 'flip', 'truncate', 'zero-page'])
        if how == 'flip':
            _flip(target, rng, rng.choice([1, 8, 64]))
        elif how == 'truncate':
            _truncate(target, rng)
        else:
            with open(target, 'r+b') as f:
                f.seek(rng.randrange(max(1, os.path.getsize(target))))
                f.write(b'\0' * 4096)
        rc, err = cli(['build-map', '--source', bag, '--out', os.path.join(work, 'bag_map'), *ENCODER])
        judge_cli(f'{os.path.basename(target)} {how}', rc, err, exits, errors, findings)
    return {'cases': cases, 'exits': dict(exits), 'errors': dict(errors.most_common()),
            'findings': dict(findings)}


def _corruptions() -> list[tuple[str, str]]:
    files = ['map.yaml', 'descriptors.npy', 'owners.npy', 'encoder_state.npz', 'index.faiss', 'places.sqlite',
             'local_features.yaml', 'lf_descriptors.npy', 'lf_keypoints.npy', 'lf_offsets.npy']
    out = [(f, how) for f in files for how in ('flip1', 'flip64', 'truncate', 'empty')]
    out += [('map.yaml', h) for h in ('non-utf8', 'dim=abc', 'no dim', 'encoder=str', 'no name',
                                      'config=list', 'multi_vector', 'schema')]
    out += [('owners.npy', 'reversed'), ('descriptors.npy', 'nan'), ('index.faiss', 'delete'),
            ('places.sqlite-journal', 'stray')]
    return out


def _corrupt_map(path: str, target: str, how: str, rng: random.Random) -> None:
    import yaml

    full = os.path.join(path, target)
    if how.startswith('flip'):
        _flip(full, rng, int(how[4:]))
    elif how == 'truncate':
        _truncate(full, rng)
    elif how == 'empty':
        open(full, 'wb').close()
    elif how == 'delete':
        os.remove(full)
    elif how == 'stray':
        open(full, 'wb').write(b'\0' * 512)
    elif how == 'non-utf8':
        open(full, 'ab').write(b'\n# \xff\xfe\n')
    elif how == 'reversed':
        np.save(full, np.load(full)[::-1].copy())
    elif how == 'nan':
        d = np.load(full)
        d[:] = np.nan
        np.save(full, d)
    else:
        meta = yaml.safe_load(open(full))
        enc = meta['encoder']
        if how == 'dim=abc':
            enc['dim'] = 'abc'
        elif how == 'no dim':
            enc.pop('dim', None)
        elif how == 'encoder=str':
            meta['encoder'] = 'raw_pixels'
        elif how == 'no name':
            enc.pop('name', None)
        elif how == 'config=list':
            enc['config'] = [1, 2]
        elif how == 'multi_vector':
            enc['multi_vector'] = True
        elif how == 'schema':
            meta['schema_version'] = 'x'
        yaml.safe_dump(meta, open(full, 'w'))


def part_maps(seed: int, rounds: int, work: str) -> dict[str, Any]:
    from tqdm import tqdm

    rng = random.Random(seed)
    clean = _clean_map(work)
    queries = os.path.join(_sample(work), 'query')
    out_dir = os.path.join(work, 'eval')
    rc, err = cli(['evaluate', '--map', clean, '--queries', queries, '--out', out_dir, '--threads', '1'])
    assert rc == 0, err
    baseline = _r_at_1(out_dir)
    findings: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cases = _corruptions()
    cases += [c for c in cases if c[1] in ('flip1', 'flip64', 'truncate')] * (rounds - 1)  # other bytes
    for target, how in tqdm(cases, desc='maps', mininterval=2):
        bad = os.path.join(work, 'bad_map')
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(clean, bad)
        if not os.path.exists(os.path.join(bad, target)) and how not in ('stray',):
            exits['file absent'] += 1
            continue
        _corrupt_map(bad, target, how, rng)
        eval_rc = None  # the node must agree with evaluate: both check the map against its encoder
        for argv in (['map-info', bad], ['evaluate', '--map', bad, '--queries', queries, '--out', out_dir,
                                         '--threads', '1']):
            shutil.rmtree(out_dir, ignore_errors=True)
            rc, err = cli(argv)
            eval_rc = rc
            command_exits: Counter[str] = Counter()
            judge_cli(f'{argv[0]} {target} {how}', rc, err, command_exits, errors, findings)
            exits.update({f'{argv[0]} {k}': n for k, n in command_exits.items()})
            if argv[0] == 'evaluate' and rc == 0 and _r_at_1(out_dir) != baseline:
                r1 = _r_at_1(out_dir)
                findings[f'evaluate {target} {how}: exit 0 with R@1 {r1} (intact {baseline})'] += 1
        node = _start_node(bad)
        exits[f'node {node}'] += 1
        if node not in ('started', 'refused'):
            findings[f'node {target} {how}: {node}'] += 1
        elif (node == 'started') != (eval_rc == 0):
            findings[f'node {target} {how}: {node} but evaluate exit {eval_rc}'] += 1
    return {'cases': len(cases), 'baseline_r1': baseline, 'exits': dict(exits),
            'errors': dict(errors.most_common()), 'findings': dict(findings)}


def _start_node(map_path: str) -> str:
    """'started', 'refused' (a VprError: the node's one FATAL line) or the unexpected exception."""
    outcome = _node_with({'map_path': map_path, 'threads': 1})
    return 'refused' if outcome.startswith('refused: ') else outcome


def _parameter_values(spec: Any, start_up: bool) -> list[Any]:
    """Hostile values of one node parameter: range ends and just beyond, NaN/inf, odd strings, wrong types."""
    d = spec.default
    if isinstance(d, bool):
        return [not d] + ([] if start_up else ['true', 1])
    if isinstance(d, int):
        if spec.low is None:
            ends = [0, -1, 2 ** 31]
        else:
            ends = [int(spec.low), int(spec.high), int(spec.low) - 1, int(spec.high) + 1]
        return ends + ([] if start_up else [1.5, 'abc'])
    if isinstance(d, float):
        ends = [float(spec.low), float(spec.high)] if spec.low is not None else [-1e300, 1e300, 0.0]
        return [math.nan, math.inf, -math.inf, *ends] + ([] if start_up else [1, 'abc'])
    return ['abc', '{', '', 'x' * 300] + ([] if start_up else ['~/../a b', 1])


def _probe(node: Any, real: Msg, bad: Msg, t: float, findings: Counter[str], what: str) -> None:
    """One real and one bad frame through a running in-process node: both accounted for, no failure."""
    for msg in (real, bad):
        before = node._skips.total + node._processed + node._rate_limited
        node._on_image(_as_ros(msg, t))
        t += 1.0
        deadline = time.monotonic() + 30
        while (node._skips.total + node._processed + node._rate_limited == before
               and time.monotonic() < deadline and node._worker.is_alive()):
            time.sleep(0.002)
        if not node._worker.is_alive():
            findings[f'{what}: worker thread died'] += 1
            return
        if node._skips.total + node._processed + node._rate_limited == before:
            findings[f'{what}: frame neither answered nor counted in 30 s'] += 1
    for kind, n in node._skips.as_dict().items():
        if kind.startswith('processing error'):
            findings[f'{what}: {kind}'] += 1
            node._skips.counts[kind] = 0


def part_params(seed: int, work: str) -> dict[str, Any]:
    """Every node parameter at start-up and, unless read-only, at run time (what ``ros2 param set`` does)."""
    import rclpy
    from rclpy.exceptions import NameValidationException, ParameterException
    from rclpy.parameter import Parameter
    from tqdm import tqdm

    from vpr_ros.errors import VprError
    from vpr_ros.ros.node import LocalizerNode
    from vpr_ros.ros.parameters import PARAMETERS

    rng = np.random.default_rng(seed)
    encoded = _encoded(rng)
    real = _real_messages(os.path.join(_sample(work), 'query'), 1)[0]
    base = {'map_path': _clean_map(work), 'threads': 1}
    findings: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    t = 1000.0

    def start(overrides: dict[str, Any]) -> tuple[Any, Any, str]:
        ctx = rclpy.Context()
        rclpy.init(context=ctx, args=[])
        try:
            node = LocalizerNode(context=ctx, parameter_overrides=[
                Parameter(k, value=v) for k, v in {**base, **overrides}.items()])
        except (VprError, ParameterException, NameValidationException) as exc:
            ctx.try_shutdown()
            return None, None, f'refused ({type(exc).__name__})'
        except Exception as exc:  # noqa: BLE001 - an unrecognised start-up failure: that is the finding
            ctx.try_shutdown()
            return None, None, f'{type(exc).__name__}: {str(exc)[:80]}'
        return node, ctx, 'started'

    startup = [(spec, v) for spec in PARAMETERS for v in _parameter_values(spec, True)]
    with recorded_warnings() as caught:
        for spec, value in tqdm(startup, desc='params start-up', mininterval=2):
            node, ctx, outcome = start({spec.name: value})
            outcomes[f'start-up {outcome.split(":")[0]}'] += 1
            if node is None:
                if not outcome.startswith('refused'):
                    findings[f'start-up {spec.name}={value!r:.40}: {outcome}'] += 1
                continue
            try:
                t += 10.0
                what = f'start-up {spec.name}={value!r:.40}'
                _probe(node, real, hostile_message(rng, encoded), t, findings, what)
            finally:
                node.destroy_node()
                ctx.try_shutdown()
        node, ctx, outcome = start({})
        assert node is not None, outcome
        runtime = [(spec, v) for spec in PARAMETERS if not spec.read_only
                   for v in _parameter_values(spec, False)]
        try:
            for spec, value in tqdm(runtime, desc='params run time', mininterval=2):
                what = f'set {spec.name}={value!r:.40}'
                try:
                    result = node.set_parameters_atomically([Parameter(spec.name, value=value)])
                except Exception as exc:  # noqa: BLE001 - rclpy's parameter service would let it escape spin
                    findings[f'{what}: {type(exc).__name__}: {str(exc)[:80]}'] += 1
                    continue
                outcomes[f'run time {"accepted" if result.successful else "refused"}'] += 1
                t += 10.0
                _probe(node, real, hostile_message(rng, encoded), t, findings, what)
                if result.successful:
                    restore = node.set_parameters_atomically([Parameter(spec.name, value=spec.default)])
                    if not restore.successful:
                        findings[f'{what}: default not restorable ({restore.reason})'] += 1
        finally:
            node.destroy_node()
            ctx.try_shutdown()
    for w in caught:
        findings[f'{w.category.__name__}: {str(w.message)[:80]}'] += 1
    return {'start_up_cases': len(startup), 'run_time_cases': len(runtime), 'outcomes': dict(outcomes),
            'findings': dict(findings)}


def part_kills(seed: int, kills: int, work: str) -> dict[str, Any]:
    """SIGKILL a build-map over an existing map: every other kill at a random moment of its run (most
    land before the save), the others within 0-100 ms of the save's temporary directory appearing."""
    from tqdm import tqdm

    rng = random.Random(seed)
    path = os.path.join(work, 'killed_map')
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(_clean_map(work), path)
    source = os.path.join(_sample(work), 'mapping')
    cmd = [sys.executable, '-m', 'vpr_ros.cli', 'build-map', '--source', source, '--out', path, *ENCODER]
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    full = time.perf_counter() - t0
    findings: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for i in tqdm(range(kills), desc='kills', mininterval=2):
        inode = os.stat(path).st_ino if os.path.isdir(path) else None
        before = set(_temporary_siblings(path))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i % 2:
            deadline = time.monotonic() + 10 * full
            while (proc.poll() is None and time.monotonic() < deadline
                   and not set(_temporary_siblings(path)) - before):
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.1))
        else:
            time.sleep(rng.uniform(0.2 * full, 1.1 * full))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            outcome = 'finished before the kill'
        elif os.path.isdir(path) and os.stat(path).st_ino != inode:
            outcome = 'replaced'
        else:
            outcome = 'old map kept'
        outcomes[f"{'during save' if i % 2 else 'random'}: {outcome}"] += 1
        left = len(_temporary_siblings(path))
        outcomes['most siblings left'] = max(outcomes['most siblings left'], left)
        rc, err = cli(['map-info', path])
        if rc != 0:
            findings[f'map-info after kill: {rc} {err.strip()[-100:]}'] += 1
    subprocess.run(cmd, capture_output=True, check=True)
    stale = _temporary_siblings(path)
    if stale:
        findings[f'{len(stale)} stale temporary maps after the next build'] += 1
    return {'kills': kills, 'build_s': round(full, 1), 'outcomes': dict(outcomes), 'findings': dict(findings)}


def _temporary_siblings(path: str) -> list[str]:
    """The ``.NAME.tmp-*`` / ``.NAME.old-*`` directories a save leaves while it runs."""
    base = os.path.basename(path)
    return [n for n in os.listdir(os.path.dirname(path)) if n.startswith((f'.{base}.tmp-', f'.{base}.old-'))]


def _node_rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith('VmRSS:'))


def part_soak(seed: int, seconds: float, work: str) -> dict[str, Any]:
    from diagnostic_msgs.msg import DiagnosticArray
    from tqdm import tqdm

    from vpr_ros.ros.replay import Recording, Session, start_node

    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    data = _sample(work)
    map_path = os.path.join(work, 'soak_map')  # the default encoder, so the soak runs the torch path
    if not os.path.isdir(map_path):
        rc, err = cli(['build-map', '--source', os.path.join(data, 'mapping'), '--out', map_path])
        assert rc == 0, err
    rng = np.random.default_rng(seed)
    encoded = _encoded(rng)
    real = [_as_ros(m, 0.0) for m in _real_messages(os.path.join(data, 'query'), 30)]
    proc = start_node(map_path, os.path.join(work, 'soak_node.log'), sim_time=False,
                      params=['qos_overrides./camera/image_raw.subscription.reliability:=reliable'],
                      remaps=['image:=/camera/image_raw'])
    session = Session()
    recording = Recording()
    findings: Counter[str] = Counter()
    rss: list[tuple[float, float]] = []
    sent = 0
    try:
        from sensor_msgs.msg import Image

        from vpr_ros.ros.messages import to_time

        pub = session.node.create_publisher(Image, '/camera/image_raw', 10)
        session.node.create_subscription(DiagnosticArray, '/diagnostics',
                                         recording.diagnostics_callback('/vpr_localizer'), 100)
        deadline = time.monotonic() + 120
        while not pub.get_subscription_count():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'node did not come up (see {work}/soak_node.log)')
            time.sleep(0.05)
        start = time.monotonic()
        bar = tqdm(total=int(seconds), desc='soak [s]', mininterval=5)
        while (now := time.monotonic()) - start < seconds and proc.poll() is None:
            if sent % 3 == 0:
                msg = real[(sent // 3) % len(real)]
            else:
                while hasattr(bad := hostile_message(rng, encoded), 'format'):
                    pass  # raw images only: the node subscribes to one transport
                msg = _as_ros(bad, 0.0)
            msg.header.stamp = to_time(1000.0 + sent / 30.0)
            pub.publish(msg)
            sent += 1
            if not rss or now - rss[-1][0] - start >= 10:
                rss.append((now - start, _node_rss_mb(proc.pid)))
                bar.update(int(rss[-1][0]) - bar.n)
            time.sleep(max(0.0, start + sent / 30.0 - time.monotonic()))
        bar.close()
        fed_s = time.monotonic() - start
        deadline = time.monotonic() + 30  # the last frame finishes and the diagnostics count it
        while time.monotonic() < deadline and proc.poll() is None:
            with recording.lock:
                diag = dict(recording.diagnostics)
            if int(diag.get('frames_received', -1)) == sent and _accounted(diag) == sent:
                break
            time.sleep(0.2)
    finally:
        session.close()
        alive = proc.poll() is None
        t0 = time.perf_counter()
        if alive:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        exit_s = time.perf_counter() - t0
    if not alive:
        findings[f'node exited during the soak (rc {proc.returncode})'] += 1
    if proc.returncode != 0 or exit_s > 5:
        findings[f'SIGINT: rc {proc.returncode} after {exit_s:.1f} s'] += 1
    diag = recording.diagnostics
    received, accounted = int(diag.get('frames_received', -1)), _accounted(diag)
    if received != sent or accounted != received:
        findings[f'sent {sent}, received {received}, accounted for {accounted}'] += 1
    findings.update({k: int(v) for k, v in diag.items() if k.startswith('skipped.processing error')})
    late = [(t, m) for t, m in rss if t >= 60]
    slope = float(np.polyfit(*zip(*late), 1)[0]) * 60 if len(late) >= 3 else float('nan')
    if slope > 1.0:
        findings[f'RSS grows {slope:.2f} MB/min'] += 1
    with open(os.path.join(work, 'soak_node.log'), errors='replace') as f:
        log = f.read()
    if 'Traceback (most recent call last)' in log:
        findings['a traceback in the node log'] += 1
    for m in WARNING_LINE.finditer(log):
        findings[f'node log: {m.group(1)}: {m.group(2)[:80]}'] += 1
    return {'seconds_fed': round(fed_s, 1), 'sent': sent, 'received': received,
            'processed': int(diag.get('frames_processed', -1)),
            'dropped': int(diag.get('frames_dropped', -1)),
            'skipped': int(diag.get('skipped_bad_frames', -1)),
            'rss_mb_start_1min_end': [round(m, 1) for m in (rss[0][1], late[0][1], rss[-1][1])] if late
            else [],
            'rss_mb_per_min_after_1min': round(slope, 3), 'sigint_exit_s': round(exit_s, 2),
            'rss_mb_every_10s': [round(m, 1) for _, m in rss],
            'findings': dict(findings)}


def _accounted(diag: dict[str, str]) -> int:
    """Frames the node's diagnostics say it processed, dropped (newest wins), rate-limited or skipped."""
    return sum(int(diag.get(k, 0)) for k in ('frames_processed', 'frames_dropped', 'frames_rate_limited',
                                             'skipped_bad_frames'))


# ----- issue 23 families: YAML bounds, CLI ranges, lying bag metadata, non-finite poses, failing callbacks
class Budget:
    """A part's time bound: ``left()`` until ``seconds`` have passed (cases beyond are not run, and the
    report says how many ran)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.deadline


def hostile_yaml(rng: random.Random) -> tuple[str, str]:
    """(kind, text) of one YAML document that must be refused in bounded time and memory."""
    kind = rng.choice(['alias bomb', 'merge bomb', 'recursive alias', 'deep nesting', 'huge', 'bad syntax',
                       'python tag', 'wide flow bomb'])
    width = rng.randint(4, 12)
    levels = math.ceil(math.log(1e6) / math.log(width)) + rng.randint(0, 3)  # > 10^6 values expanded
    if kind == 'alias bomb':
        lines = [f'a0: &a0 [{", ".join(["x"] * width)}]']
        lines += [f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * width)}]' for i in range(1, levels)]
        return kind, '\n'.join(lines) + '\n'
    if kind == 'merge bomb':
        lines = ['m0: &m0 {k: v}']
        lines += [f'm{i}: &m{i} {{{", ".join(f"k{j}: *m{i - 1}" for j in range(width))}}}'
                  for i in range(1, levels)]
        return kind, '\n'.join(lines) + '\n'
    if kind == 'wide flow bomb':
        parts = ['a: &a [x,x,x,x,x,x,x,x,x]'] + [f'{n}: &{n} [{",".join([f"*{p}"] * width)}]'
                                                 for p, n in zip('abcdefghijk', 'bcdefghijkl')][:levels]
        return kind, '{' + ', '.join(parts) + '}'
    if kind == 'recursive alias':
        return kind, rng.choice(['&a [*a]', 'a: &a {b: *a}', '&x [1, [2, *x]]'])
    if kind == 'deep nesting':
        depth = rng.randint(150, 50_000)
        return kind, rng.choice(['[' * depth + ']' * depth, '{a: ' * depth + '1' + '}' * depth])
    if kind == 'huge':
        return kind, 'k: ' + 'x' * rng.randint(1 << 20, 3 << 20)
    if kind == 'python tag':
        return kind, rng.choice(['!!python/object/apply:os.system ["true"]', '!!python/name:os.system',
                                 'k: !!python/tuple [1, 2]'])
    return kind, rng.choice(['{a: [1, 2', 'a: b: c', '- [\n', '"unterminated', '\t- tab'])


def _timed_cli(argv: list[str]) -> tuple[int | str, str, float, float]:
    before = _rss_mb()
    t0 = time.perf_counter()
    rc, err = cli(argv)
    return rc, err, time.perf_counter() - t0, _rss_mb() - before


def part_yaml(seed: int, cases: int, seconds: float, work: str) -> dict[str, Any]:
    """Hostile YAML through every door: ``--set``, ``--config``, map.yaml, the node's encoder_config.
    Finding: not refused with exit 2 and one error line, more than 5 s or 200 MB for one case, an error
    line longer than 400 characters (a formatted expanded value), or the node accepting the document."""
    from vpr_ros.ros.node import LocalizerNode  # noqa: F401 - fails early without ROS

    rng = random.Random(seed)
    budget = Budget(seconds)
    mapping = os.path.join(_sample(work), 'mapping')
    clean = _clean_map(work)
    findings: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    node_params = {'map_path': '', 'incremental': True, 'encoder': 'raw_pixels', 'threads': 1}
    t0 = time.perf_counter()
    _node_with({**node_params, 'encoder_config': '{threads: 1}'})
    node_start_s = time.perf_counter() - t0  # a node's start-up on this (possibly busy) machine
    done = 0
    for i in range(cases):
        if not budget.left():
            break
        kind, text = hostile_yaml(rng)
        door = ['--set', '--config', 'map.yaml', 'encoder_config'][i % 4]
        kinds[f'{door} {kind}'] += 1
        t0, before = time.perf_counter(), _rss_mb()
        if door == 'encoder_config':
            outcome = _node_with({**node_params, 'encoder_config': text})
            took, grew = time.perf_counter() - t0 - node_start_s, _rss_mb() - before
            if not outcome.startswith('refused'):
                findings[f'encoder_config {kind}: {outcome}'] += 1
            elif len(outcome) > 400:
                findings[f'encoder_config {kind}: a {len(outcome)}-character error'] += 1
        else:
            build = ['build-map', '--source', mapping, '--out', os.path.join(work, 'yaml_map'), *ENCODER[:2]]
            if door == '--set':
                argv = [*build, '--set', f'pca_dim={text}']
            elif door == '--config':
                path = os.path.join(work, 'hostile.yaml')
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(text)
                argv = [*build, '--config', path]
            else:
                broken = os.path.join(work, 'yaml_bad_map')
                shutil.rmtree(broken, ignore_errors=True)
                shutil.copytree(clean, broken)
                if kind == 'huge':  # beyond the map.yaml cap (16 MiB): below it a long value is valid
                    text = 'k: ' + 'x' * (17 << 20)
                with open(os.path.join(broken, 'map.yaml'), 'a', encoding='utf-8') as f:
                    f.write('\n' + text)
                argv = ['map-info', broken]
            rc, err, took, grew = _timed_cli(argv)
            judge_cli(f'{door} {kind}', rc, err, exits, errors, findings)
            if rc != 2:
                findings[f'{door} {kind}: exit {rc}'] += 1
            if len(err) > 400:
                findings[f'{door} {kind}: {len(err)} characters on stderr'] += 1
        if took > 5.0:
            findings[f'{door} {kind}: {took:.1f} s'] += 1
        if grew > 200:
            findings[f'{door} {kind}: +{grew:.0f} MB'] += 1
        done += 1
    return {'cases': done, 'node_start_s': round(node_start_s, 2), 'kinds': dict(kinds), 'exits': dict(exits),
            'errors': dict(errors.most_common()),
            'findings': dict(findings)}


def _node_with(params: dict[str, Any]) -> str:
    """'refused: <message>' (a VprError at start-up), 'started', or the unexpected exception."""
    import rclpy
    from rclpy.parameter import Parameter

    from vpr_ros.errors import VprError
    from vpr_ros.ros.node import LocalizerNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    try:
        node = LocalizerNode(context=ctx,
                             parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    except VprError as exc:
        return f'refused: {exc}'
    except Exception as exc:  # noqa: BLE001 - that is the finding
        return f'{type(exc).__name__}: {str(exc)[:100]}'
    else:
        node.destroy_node()
        return 'started'
    finally:
        ctx.try_shutdown()


CLI_VALUES = ('nan', 'inf', '-inf', '-1', '0', '1e30', str(10 ** 30))


def part_cli_ranges(seed: int, seconds: float, work: str) -> dict[str, Any]:
    """Every numeric option of every subcommand x {nan, inf, -inf, -1, 0, 1e30, 10^30}. A value outside
    the option's range must exit 2 with one ``error:`` line naming the option; a value inside it is
    parsed, and for build-map and evaluate run for real on the sample (in random order, time-bounded).
    Finding: a traceback, an exit other than 0/2, a refused value without one error line, a non-finite
    value accepted, or evaluate printing a recall over no answerable query as a number."""
    import argparse

    from vpr_ros.cli import NumberType, build_parser

    rng = random.Random(seed)
    budget = Budget(seconds)
    data = _sample(work)
    clean = _clean_map(work)
    required = {
        'sample': [os.path.join(work, 'cli_sample')],
        'build-map': ['--source', os.path.join(data, 'mapping'), '--out', os.path.join(work, 'cli_map'),
                      *ENCODER],
        'evaluate': ['--map', clean, '--queries', os.path.join(data, 'query')],
        'export-onnx': ['raw_pixels', os.path.join(work, 'cli.onnx')],
        'train': ['--source', os.path.join(data, 'mapping'), '--encoder', 'gem',
                  '--out', os.path.join(work, 't')],
        'replay': ['--bag', os.path.join(data, 'query'), '--map', clean],
        'demo': [],
    }
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    findings: Counter[str] = Counter()
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.type in (int, float):
                findings[f'{command} {action.option_strings}: bare {action.type.__name__} type'] += 1
            if isinstance(action.type, NumberType):
                cases += [(command, action, value) for value in CLI_VALUES]
    rng.shuffle(cases)
    exits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    refused = accepted = ran = 0
    for command, action, value in cases:
        if not budget.left():
            break
        option = action.option_strings[0] if action.option_strings else None
        argv = [command, *required[command], *([option, value] if option else [])]
        try:
            action.type(value)
            ok = True
        except argparse.ArgumentTypeError:
            ok = False
        what = f'{command} {option} {value}'
        if not ok:
            refused += 1
            rc, err = cli(argv)
            judge_cli(what, rc, err, exits, errors, findings)
            if rc != 2 or option not in err:
                findings[f'{what}: refused value gave exit {rc}'] += 1
            continue
        accepted += 1
        if not math.isfinite(float(value)):
            findings[f'{what}: non-finite value accepted'] += 1
        if command in ('build-map', 'evaluate') and '--loops' not in argv and not _loops_only(action):
            rc, err = cli(argv)
            ran += 1
            judge_cli(what, rc, err, exits, errors, findings)
        else:
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    parser.parse_args(argv)
            except SystemExit as exc:
                findings[f'{what}: accepted by the type, refused by the parser ({exc.code})'] += 1
    return {'cases': refused + accepted, 'of': len(cases), 'refused': refused, 'accepted': accepted,
            'accepted_and_run': ran, 'exits': dict(exits), 'errors': dict(errors.most_common(12)),
            'findings': dict(findings)}


def _loops_only(action: Any) -> bool:
    return action.dest in ('min_score', 'min_time_separation', 'consistency_frames', 'verified_frames',
                           'keyframe_interval', 'verify_top_k', 'max_keypoints')


METADATA_LIES = ('0', '1', 'half', 'minus one', '10^12', '2^63-1')


def _lie_about_counts(bag: str, lie: str) -> int:
    """Set every topic's (and the total) message count in metadata.yaml to the lie; the true image count."""
    import yaml

    path = os.path.join(bag, 'metadata.yaml')
    with open(path, encoding='utf-8') as f:
        meta = yaml.safe_load(f)
    info = meta['rosbag2_bagfile_information']
    true_images = 0
    for entry in info['topics_with_message_count']:
        n = int(entry['message_count'])
        if 'image' in entry['topic_metadata']['name']:
            true_images = n
        entry['message_count'] = {'0': 0, '1': 1, 'half': n // 2, 'minus one': max(n - 1, 0),
                                  '10^12': 10 ** 12, '2^63-1': 2 ** 63 - 1}[lie]
    info['message_count'] = sum(e['message_count'] for e in info['topics_with_message_count'])
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(meta, f)
    return true_images


def part_metadata(seed: int, seconds: float, work: str) -> dict[str, Any]:
    """Bags (sqlite3 and mcap) whose metadata.yaml counts lie, through build-map, evaluate and train's
    feature cache. Finding: a different number of places, Recall@1 or cached frames than with the true
    counts, an exit other than 0, or more than 500 MB of memory for a case."""
    from vpr_ros.sources import open_source
    from vpr_ros.training.cache import FeatureCache

    rng = random.Random(seed)
    budget = Budget(seconds)
    sources = [os.path.join(_sample(work), 'query'), os.path.join(work, 'sample_mcap', 'query')]
    clean = _clean_map(work)
    findings: Counter[str] = Counter()
    truth: dict[str, tuple[int, float | None]] = {}

    def run(bag: str, tag: str) -> tuple[int, float | None] | None:
        from vpr_ros.mapdb.store import VprMap

        out = os.path.join(work, 'meta_map')
        rc, err = cli(['build-map', '--source', bag, '--out', out, *ENCODER])
        if rc != 0:
            findings[f'{tag}: build-map exit {rc}: {err.strip()[-100:]}'] += 1
            return None
        report = os.path.join(work, 'meta_eval')
        rc, err = cli(['evaluate', '--map', clean, '--queries', bag, '--out', report])
        if rc != 0:
            findings[f'{tag}: evaluate exit {rc}: {err.strip()[-100:]}'] += 1
            return None
        return len(VprMap.load(out)), _r_at_1(report)

    cases = [(s, lie) for s in sources for lie in METADATA_LIES]
    rng.shuffle(cases)
    done = 0
    for src, lie in [(s, None) for s in sources] + cases:
        if lie is not None and not budget.left():
            break
        bag = os.path.join(work, 'lying_bag')
        shutil.rmtree(bag, ignore_errors=True)
        shutil.copytree(src, bag)
        true_images = _lie_about_counts(bag, lie) if lie else 0
        tag = f'{os.path.basename(os.path.dirname(src))} count {lie}'
        before = _rss_mb()
        got = run(bag, tag)
        source = open_source(bag)
        cache = FeatureCache.build(os.path.join(work, 'meta_cache'), 'k', ((0, f) for f in source.frames()),
                                   source.image_count, _MeanPixel(), _mean_pixels, copies=1, seed=0, batch=16,
                                   extra={}, progress=False)
        if _rss_mb() - before > 500:
            findings[f'{tag}: +{_rss_mb() - before:.0f} MB'] += 1
        if lie is None:
            truth[src] = (got, len(cache.table))  # type: ignore[assignment]
            continue
        done += 1
        want_run, want_cached = truth[src]  # type: ignore[misc]
        if got is not None and got != want_run:
            findings[f'{tag}: places/R@1 {got} instead of {want_run}'] += 1
        if len(cache.table) != want_cached:
            findings[f'{tag}: {len(cache.table)} frames cached instead of {want_cached} (true count '
                     f'{true_images})'] += 1
    return {'cases': done, 'of': len(cases), 'findings': dict(findings)}


class _MeanPixel:
    """A stand-in backbone for the feature cache (the cache, not the network, is under test)."""

    def eval(self) -> '_MeanPixel':
        return self

    def __call__(self, x: Any) -> Any:
        return x


def _mean_pixels(imgs: list[np.ndarray]) -> Any:
    import torch

    return torch.from_numpy(np.stack([i.reshape(-1, 3).mean(axis=0) for i in imgs]).astype(np.float32))


def _bad_number(rng: random.Random) -> float:
    return rng.choice([math.nan, math.inf, -math.inf, 1e300, -1e300, 2e9])


def part_poses(seed: int, cases: int, seconds: float, work: str) -> dict[str, Any]:
    """Non-finite and degenerate poses: a few odometry messages of a bag, rows of a poses.csv and the
    node's /odom with NaN/inf/1e300 in random fields, all-zero and tiny quaternions. Finding: build-map
    not exiting 0, fewer places than images covered by good poses, a bad pose not counted as a skip,
    a NaN in the map, a Python warning, or the node failing a frame (a processing error)."""
    import cv2

    from vpr_ros.frames import Frame, Pose
    from vpr_ros.mapdb.store import VprMap
    from vpr_ros.sources.bag import write_bag

    rng = random.Random(seed)
    budget = Budget(seconds)
    findings: Counter[str] = Counter()
    done = 0
    base = np.random.default_rng(seed)
    images = [base.integers(0, 255, (32, 40, 3), np.uint8) for _ in range(8)]
    for case in range(cases):
        if not budget.left():
            break
        n_bad = rng.randint(1, 3)
        stamps = [100.0 + i for i in range(8)]
        odom = [(t + dt, Pose((3.0 * (t - 100) + 3 * dt, 0.0, 0.0)))
                for t in stamps for dt in (-0.2, 0.0, 0.2)]
        bad_at = rng.sample(range(len(odom)), n_bad)
        for k in bad_at:
            t, p = odom[k]
            how = rng.choice(['position', 'orientation', 'zero quaternion', 'tiny quaternion'])
            if how == 'position':
                pos = list(p.position)
                pos[rng.randrange(3)] = _bad_number(rng)
                odom[k] = (t, Pose(tuple(pos), p.orientation))  # type: ignore[arg-type]
            elif how == 'orientation':
                q = [0.0, 0.0, 0.0, 1.0]
                q[rng.randrange(4)] = _bad_number(rng)
                odom[k] = (t, Pose(p.position, tuple(q)))  # type: ignore[arg-type]
            else:  # a zero or denormal quaternion: a position-only pose, not a bad one
                quat = (0.0,) * 4 if how == 'zero quaternion' else (1e-310, 0.0, 0.0, 0.0)
                odom[k] = (t, Pose(p.position, quat))
        bag = os.path.join(work, 'pose_bag')
        shutil.rmtree(bag, ignore_errors=True)
        with recorded_warnings() as caught:
            write_bag(bag, [Frame(t, img) for t, img in zip(stamps, images)], poses=odom)
            out = os.path.join(work, 'pose_map')
            rc, err = cli(['build-map', '--source', bag, '--out', out, '--encoder', 'raw_pixels'])
            tag = f'bag case {case}'
            if rc != 0:
                findings[f'{tag}: build-map exit {rc}: {err.strip()[-100:]}'] += 1
            else:
                vmap = VprMap.load(out)
                poses = vmap.places.poses
                if len(vmap) != 8:
                    findings[f'{tag}: {len(vmap)} places of 8 images'] += 1
                if np.isnan(poses[:, :3]).any():
                    findings[f'{tag}: a NaN position in the map'] += 1
            # the same through an image folder + poses.csv, one bad number per bad row
            folder = os.path.join(work, 'pose_folder')
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            rows = ['image,x,y,z,stamp,qx,qy,qz,qw']
            bad_rows = 0
            for i, (t, img) in enumerate(zip(stamps, images)):
                cv2.imwrite(os.path.join(folder, f'{i}.png'), img)
                values = [3.0 * i, 0.0, 0.0, t, 0.0, 0.0, 0.0, 1.0]
                if i in bad_at[:2]:
                    values[rng.randrange(len(values))] = _bad_number(rng)
                    # bad: a non-finite number anywhere, a position beyond 1e9 m (a stamp may be large)
                    bad_rows += not all(math.isfinite(v) for v in values) or max(map(abs, values[:3])) > 1e9
                rows.append(f'{i}.png,' + ','.join(repr(v) for v in values))
            with open(os.path.join(folder, 'poses.csv'), 'w', encoding='utf-8') as f:
                f.write('\n'.join(rows) + '\n')
            rc, err = cli(['build-map', '--source', folder, '--out', out, '--encoder', 'raw_pixels'])
            if rc != 0:
                findings[f'csv case {case}: build-map exit {rc}: {err.strip()[-100:]}'] += 1
            elif len(VprMap.load(out)) != 8 - bad_rows:
                findings[f'csv case {case}: {len(VprMap.load(out))} places, expected {8 - bad_rows}'] += 1
        for w in caught:
            findings[f'{w.category.__name__}: {str(w.message)[:80]}'] += 1
        done += 1
    node_findings = _node_odometry(rng, budget)
    findings.update(node_findings)
    return {'cases': done, 'findings': dict(findings)}


def _node_odometry(rng: random.Random, budget: Budget) -> Counter[str]:
    """The incremental node fed bad odometry between frames (callbacks called as the executor would)."""
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter

    from vpr_ros.ros.messages import to_time
    from vpr_ros.ros.node import LocalizerNode

    findings: Counter[str] = Counter()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    node = LocalizerNode(context=ctx, parameter_overrides=[
        Parameter('map_path', value=''), Parameter('incremental', value=True),
        Parameter('use_odom', value=True), Parameter('encoder', value='raw_pixels'),
        Parameter('threads', value=1),
        Parameter('keyframe.min_interval', value=0.0)])
    odom_cb = next(s.callback for s in node.subscriptions if s.topic_name == '/odom')
    frames = np.random.default_rng(0)
    try:
        with recorded_warnings() as caught:
            for k in range(60):
                if not budget.left():
                    break
                t = 10.0 + k
                for dt in (-0.1, 0.0):
                    msg = Odometry()
                    msg.header.stamp = to_time(t + dt)
                    msg.header.frame_id = 'odom'
                    msg.pose.pose.position.x = 2.0 * t
                    msg.pose.pose.orientation.w = 1.0
                    if rng.random() < 0.5:
                        field = rng.choice(['x', 'y', 'qx', 'qw', 'zero'])
                        if field == 'zero':
                            msg.pose.pose.orientation.w = 0.0
                        elif field in ('x', 'y'):
                            setattr(msg.pose.pose.position, field, _bad_number(rng))
                        else:
                            setattr(msg.pose.pose.orientation, field[1], _bad_number(rng))
                    odom_cb(msg)
                rgb = frames.integers(0, 255, (32, 40, 3), np.uint8)
                before = node._processed + node._skips.total
                node._on_image(_as_ros(Msg(height=32, width=40, encoding='rgb8', step=120, is_bigendian=False,
                                           data=rgb.tobytes()), t))
                deadline = time.monotonic() + 30
                while node._processed + node._skips.total == before and time.monotonic() < deadline:
                    time.sleep(0.002)
        for w in caught:
            findings[f'node: {w.category.__name__}: {str(w.message)[:80]}'] += 1
        for kind, n in node._skips.as_dict().items():
            if 'error' in kind:
                findings[f'node: {kind}'] += n
        findings.update({f'node: callback error {k}': n for k, n in node._callback_errors.items()})
        poses = node._localizer.map.places.poses
        if np.isnan(poses[:, :3][node._localizer.map.places.has_pose]).any():
            findings['node: a NaN keyframe position'] += 1
    finally:
        node.destroy_node()
        ctx.try_shutdown()
    return findings


INJECTED = (RuntimeError, ValueError, KeyError, TypeError, MemoryError, OSError, ZeroDivisionError)


def part_callbacks(seed: int, rounds: int, seconds: float, work: str) -> dict[str, Any]:
    """Every callback the node registered (subscriptions, rclpy's /clock subscription and parameter
    services, ~/save_map, both parameter callbacks, timers) and its loop-closure thread, each made to
    fail with a random exception (seeded) at a random internal call, then called as the executor calls
    it; after each round a real frame must be answered and diagnostics published. Finding: a callback
    that raised to its caller, a failure not counted, a frame not answered, no diagnostics."""
    import rclpy
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo

    from vpr_ros import features as lf
    from vpr_ros.ros.node import LocalizerNode

    rng = random.Random(seed)
    budget = Budget(seconds)
    real = _real_messages(os.path.join(_sample(work), 'query'), 3)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    node = LocalizerNode(context=ctx, parameter_overrides=[
        Parameter('map_path', value=_clean_map(work)), Parameter('threads', value=1),
        Parameter('use_odom', value=True), Parameter('use_sim_time', value=True),
        Parameter('save_map_path', value=os.path.join(work, 'callbacks_saved_map')),
        Parameter('loop_closure.min_time_separation', value=0.0)])
    diagnostics: list[Any] = []
    node._pub_diag.publish = diagnostics.append
    findings: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    subs = {s.topic_name: s.callback for s in node.subscriptions}
    services = {s.srv_name.rsplit('/', 1)[-1]: s for s in node.services}
    timers = list(node.timers)

    def inject(obj: Any, name: str, exc: BaseException) -> Any:
        original = getattr(obj, name)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise exc
        setattr(obj, name, fail)
        return lambda: setattr(obj, name, original)

    from nav_msgs.msg import Odometry
    from rcl_interfaces.srv import GetParameters, SetParameters
    from std_srvs.srv import Trigger

    def kinds() -> dict[str, Any]:
        def odom() -> None:
            undo = inject(node, '_check_odom_frame', exc)
            node._odom_frame_checked = False
            msg = Odometry()
            msg.header.frame_id = 'odom'
            subs['/odom'](msg)
            undo()

        def camera_info() -> None:
            undo = inject(lf, 'camera_from_msg_fields', exc)
            subs['/camera_info'](CameraInfo())
            undo()

        def image() -> None:
            undo = inject(node._slot, 'put', exc)
            subs['/image'](_as_ros(real[0], 1.0))
            undo()

        def clock() -> None:
            bad = Clock()
            bad.clock.sec = -rng.randint(1, 2 ** 31 - 1)  # rclpy's TimeSource raises ValueError itself
            subs['/clock'](bad)

        def save_map() -> None:
            undo = inject(node._localizer.map, 'save', exc)
            reply = services['save_map'].callback(Trigger.Request(), Trigger.Response())
            undo()
            if reply is None or reply.success:
                findings['save_map: no failure reply'] += 1

        def set_parameters() -> None:
            undo = inject(node, rng.choice(['_loop_config', '_sequence_config', '_apply_settings']), exc)
            request = SetParameters.Request(parameters=[
                rclpy.parameter.Parameter('top_k', value=rng.randint(1, 10)).to_parameter_msg()])
            services['set_parameters'].callback(request, SetParameters.Response())
            undo()

        def get_parameters() -> None:
            undo = inject(node, 'get_parameter', exc)
            services['get_parameters'].callback(GetParameters.Request(names=['top_k']),
                                                                GetParameters.Response())
            undo()

        def timer() -> None:
            undo = inject(node._skips, 'as_dict', exc) if rng.random() < 0.5 else inject(
                node._input_rate, 'last_event_age', exc)
            for t in timers:
                t.callback()
            undo()

        def loop_thread() -> None:
            undo = inject(node._loop_filter, 'update', exc)
            skipped = node._skips.total
            _answer(node, real[1], findings, 'loop thread')
            deadline = time.monotonic() + 30
            while node._skips.total == skipped and time.monotonic() < deadline:
                time.sleep(0.002)
            undo()

        return {'odom': odom, 'camera_info': camera_info, 'image': image, 'clock': clock,
                'save_map': save_map, 'set_parameters': set_parameters, 'get_parameters': get_parameters,
                'timer': timer, 'loop_thread': loop_thread}

    done = 0
    try:
        with recorded_warnings() as caught:
            for r in range(rounds):
                if not budget.left():
                    break
                for name, run in sorted(kinds().items(), key=lambda _: rng.random()):
                    exc = rng.choice(INJECTED)(f'injected {name} failure {r}')
                    before = sum(node._callback_errors.values()) + node._skips.total
                    try:
                        run()
                    except BaseException as raised:  # noqa: BLE001 - that is the finding
                        findings[f'{name}: {type(raised).__name__} reached the executor'] += 1
                    calls[name] += 1
                    if sum(node._callback_errors.values()) + node._skips.total == before:
                        findings[f'{name}: failure not counted'] += 1
                    _answer(node, real[2], findings, f'after {name}')
                    sent = len(diagnostics)
                    for t in timers:
                        t.callback()
                    if len(diagnostics) == sent:
                        findings[f'after {name}: no diagnostics published'] += 1
                done += 1
        for w in caught:
            findings[f'{w.category.__name__}: {str(w.message)[:80]}'] += 1
        return {'rounds': done, 'calls': dict(calls), 'callback_errors': dict(node._callback_errors),
                'skips': {k: v for k, v in node._skips.as_dict().items() if 'error' in k},
                'findings': dict(findings)}
    finally:
        node.destroy_node()
        ctx.try_shutdown()


def _answer(node: Any, real: Msg, findings: Counter[str], what: str) -> None:
    """A real frame through the image callback: it must be processed within 30 s."""
    sub = next(s.callback for s in node.subscriptions if s.topic_name == '/image')
    before = node._processed
    node._last_image_stamp = None
    sub(_as_ros(real, 5000.0 + before))
    deadline = time.monotonic() + 30
    while node._processed == before and time.monotonic() < deadline:
        time.sleep(0.002)
    if node._processed == before:
        findings[f'{what}: real frame not answered in 30 s'] += 1


MAP_PARTS = ['readers', 'diskfull', 'foreign', 'specs', 'fitmem']


def map_parts(seed: int, seconds: float, work: str) -> dict[str, Any]:
    """The issue-23 parts (benchmarks/hostile_maps.py), as runs of main()."""
    import hostile_maps as hm

    def build_argv() -> list[str]:
        return ['build-map', '--source', os.path.join(_sample(work), 'mapping'), *ENCODER]

    return {'readers': lambda: hm.race_loads(os.path.join(work, 'race_map'), seconds, seed),
            'diskfull': lambda: hm.part_diskfull(seed, seconds, work, build_argv(), cli),
            'foreign': lambda: hm.part_foreign(seed, seconds, work, cli, build_argv()),
            'specs': lambda: hm.part_specs(seed, seconds, os.path.join(work, 'specs')),
            'fitmem': lambda: hm.part_fitmem()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parts = ['decoder', 'node', 'params', 'bags', 'maps', 'kills', 'soak', *MAP_PARTS, 'yaml', 'cli_ranges',
             'metadata', 'poses', 'callbacks']
    ap.add_argument('--parts', nargs='+', default=parts, choices=parts)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--decoder-cases', type=int, default=15000)
    ap.add_argument('--node-frames', type=int, default=2500, help='bad frames (plus one real per 9)')
    ap.add_argument('--bag-cases', type=int, default=90)
    ap.add_argument('--map-rounds', type=int, default=3, help='rounds of the random map corruptions')
    ap.add_argument('--kills', type=int, default=42)
    ap.add_argument('--soak-seconds', type=float, default=600.0)
    ap.add_argument('--yaml-cases', type=int, default=200)
    ap.add_argument('--pose-cases', type=int, default=30)
    ap.add_argument('--callback-rounds', type=int, default=20)
    ap.add_argument('--part-seconds', type=float, default=300.0,
                    help='time bound of each of the yaml, cli_ranges, metadata, poses and callbacks parts')


    ap.add_argument('--map-seconds', type=float, default=60.0, help='time bound of each issue-23 map part')
    ap.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'vpr_campaign'))
    ap.add_argument('--json')
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    runs = {'decoder': lambda: part_decoder(args.seed, args.decoder_cases),
            'node': lambda: part_node(args.seed, args.node_frames, args.work),
            'params': lambda: part_params(args.seed, args.work),
            'bags': lambda: part_bags(args.seed, args.bag_cases, args.work),
            'maps': lambda: part_maps(args.seed, args.map_rounds, args.work),
            'kills': lambda: part_kills(args.seed, args.kills, args.work),
            'soak': lambda: part_soak(args.seed, args.soak_seconds, args.work),
            'yaml': lambda: part_yaml(args.seed, args.yaml_cases, args.part_seconds, args.work),
            'cli_ranges': lambda: part_cli_ranges(args.seed, args.part_seconds, args.work),
            'metadata': lambda: part_metadata(args.seed, args.part_seconds, args.work),
            'poses': lambda: part_poses(args.seed, args.pose_cases, args.part_seconds, args.work),
            'callbacks': lambda: part_callbacks(args.seed, args.callback_rounds, args.part_seconds,
                                                args.work),
            **map_parts(args.seed, args.map_seconds, args.work)}
    report = {}
    for part in args.parts:
        t0 = time.perf_counter()
        report[part] = {**runs[part](), 'seconds': round(time.perf_counter() - t0, 1),
                        'load_avg_1_5_15': [round(v, 2) for v in os.getloadavg()]}
        print(part, json.dumps(report[part], indent=1), flush=True)
    total = sum(sum(r['findings'].values()) for r in report.values())
    print(f'findings: {total}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())

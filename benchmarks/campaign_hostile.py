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

* ``readers``, ``diskfull``, ``foreign``, ``specs``, ``fitmem`` (issue 23, each bounded by
  ``--map-seconds``): see benchmarks/hostile_maps.py: loads racing saves (a mixed or refused load),
  saves onto a full tmpfs (anything but one line naming the cause with the old map intact),
  build-map/save onto folders that are not maps (a changed file, or a refusal after the encoder
  was created), random edge index specs in child processes (a crash, a traceback, an accepted spec
  that cannot search), and the memory build-map's vocabulary fit holds for 4K frames.

Work files (sample bags, maps) go to ``--work`` (default ``$TMPDIR/vpr_campaign``) and are reused;
nothing is downloaded. Run ROS parts with an isolated ``ROS_DOMAIN_ID``.

    .venv/bin/python benchmarks/campaign_hostile.py [--parts decoder node params bags maps kills soak]
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

    from vpr_ros.ros.localizer import LocalizerNode

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
    import rclpy
    from rclpy.parameter import Parameter

    from vpr_ros.errors import VprError
    from vpr_ros.ros.localizer import LocalizerNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    try:
        node = LocalizerNode(context=ctx, parameter_overrides=[Parameter('map_path', value=map_path),
                                                               Parameter('threads', value=1)])
    except VprError:
        return 'refused'
    except Exception as exc:  # noqa: BLE001 - that is the finding
        return f'{type(exc).__name__}: {str(exc)[:100]}'
    else:
        node.destroy_node()
        return 'started'
    finally:
        ctx.try_shutdown()


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
    from vpr_ros.ros.localizer import LocalizerNode
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
    parts = ['decoder', 'node', 'params', 'bags', 'maps', 'kills', 'soak', *MAP_PARTS]
    ap.add_argument('--parts', nargs='+', default=parts, choices=parts)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--decoder-cases', type=int, default=15000)
    ap.add_argument('--node-frames', type=int, default=2500, help='bad frames (plus one real per 9)')
    ap.add_argument('--bag-cases', type=int, default=90)
    ap.add_argument('--map-rounds', type=int, default=3, help='rounds of the random map corruptions')
    ap.add_argument('--kills', type=int, default=42)
    ap.add_argument('--soak-seconds', type=float, default=600.0)
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

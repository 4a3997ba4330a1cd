"""Hostile-campaign parts about map files (issue 23): concurrent readers, disk full, foreign folders,
index specs, fit memory. Each part is seeded and bounded in time and returns ``{'findings': Counter,
...}`` like the parts of campaign_hostile.py, which runs them (``--parts readers diskfull ...``).

* ``readers``: a writer process saves two maps of equal shape (A and B) to one path, alternating,
  while this process loads it in a loop (plain and memory-mapped loads, growing the mapped index).
  Finding: a load that mixes the two saves (descriptors, places, encoder state, local features,
  map.yaml or index of different saves) or a load refused although both saves were complete.
* ``diskfull``: ``build-map`` onto a 1 MB tmpfs (root; otherwise ENOSPC injected at a random write)
  over an existing map. Finding: an exit other than 2, not exactly one ``error:`` line, a traceback,
  the old map changed, or a temporary sibling left behind.
* ``foreign``: ``build-map`` onto folders that are not vpr_ros maps (a nav2 map_server folder, a map
  holding a user's file, a mount point, a symbolic link, a random user tree). Finding: any file of
  the folder changed or gone, an exit other than 2, or the refusal coming after the encode.
* ``specs``: random index specs from the grammar's edges (zero, one, huge and non-ASCII numbers,
  unknown words, stray separators) through ``build-map --index`` and through a map.yaml edited to
  name them, each in a subprocess. Finding: a crash (signal), a traceback, or a spec that builds a
  map ``evaluate`` then cannot search.
* ``fitmem``: the resident memory the vocabulary fit's images take for 4K frames, against the
  frames at the encoder's input size. Finding: the fit keeping more than 2x the input-size bytes.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from collections import Counter
from typing import Any

import numpy as np

from vpr_ros.errors import MapBusyError, MapError
from vpr_ros.features import LocalFeatureConfig, LocalFeatures
from vpr_ros.frames import Pose
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.store import VprMap

RACE_PLACES, RACE_DIM = 40, 16


def race_map(label: str, seed: int, index: str = 'flat') -> VprMap:
    """A small map whose every file says which save it came from (``label``), same shape for any label."""
    rng = np.random.default_rng(seed)
    identity = {'name': 'race', 'config': {}, 'weights_fingerprint': 'none', 'dim': RACE_DIM,
                'multi_vector': False}
    vmap = VprMap.empty(identity, index=index, encoder_state={'label': np.full(4, seed, np.int64)},
                        build={'description': label})
    vmap.local_features = LocalFeatureStore(LocalFeatureConfig('orb', 8, 64))
    vecs = rng.normal(size=(RACE_PLACES, RACE_DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(RACE_PLACES):
        kps = np.full((8, 2), seed + i, np.float32)
        vmap.add(seed * 1000.0 + i, Pose.from_xy_yaw(float(seed), float(i), 0.0), vecs[i],
                 features=LocalFeatures(kps, np.full((8, 32), seed % 256, np.uint8), (64, 64)))
    return vmap


def _writer(path: str, seeds: tuple[int, int], stop: Any, saves: Any) -> None:
    maps = [race_map(f'save-{s}', s) for s in seeds]
    i = 0
    while not stop.is_set():
        maps[i % 2].save(path)
        i += 1
        saves.value = i


def mixed_problem(vmap: VprMap, seeds: tuple[int, int]) -> str | None:
    """Which part of a loaded race map belongs to another save than its map.yaml (None: consistent)."""
    label = vmap.meta.build.get('description')
    seed = next((s for s in seeds if label == f'save-{s}'), None)
    if seed is None:
        return f'unknown map.yaml label {label!r}'
    want = race_map(label, seed)
    if not np.allclose(np.asarray(vmap.descriptors[:RACE_PLACES], np.float32), want.descriptors, atol=1e-6):
        return 'descriptors of the other save'
    if not np.array_equal(vmap.places.stamps[:RACE_PLACES], want.places.stamps):
        return 'places of the other save'
    if not np.array_equal(vmap.encoder_state.get('label'), want.encoder_state['label']):
        return 'encoder state of the other save'
    if vmap.local_features is None or not np.array_equal(vmap.local_features.get(0).keypoints,
                                                         want.local_features.get(0).keypoints):
        return 'local features of the other save'
    if not np.allclose(vmap.index.reconstruct(RACE_PLACES - 1), want.descriptors[-1], atol=1e-5):
        return 'index of the other save'
    return None


def race_loads(path: str, seconds: float, seed: int = 0) -> dict[str, Any]:
    """Load ``path`` in a loop for ``seconds`` while another process alternates two saves to it."""
    seeds = (2 * seed + 1, 2 * seed + 2)
    race_map(f'save-{seeds[0]}', seeds[0]).save(path)
    ctx = multiprocessing.get_context('spawn')
    stop, saves = ctx.Event(), ctx.Value('q', 0)
    writer = ctx.Process(target=_writer, args=(path, seeds, stop, saves), daemon=True)
    writer.start()
    rng = np.random.default_rng(seed)
    findings: Counter[str] = Counter()
    loads = busy = 0
    try:
        while saves.value < 2 and writer.is_alive():
            time.sleep(0.01)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and writer.is_alive():
            mmap = bool(rng.integers(2))
            try:
                vmap = VprMap.load(path, mmap=mmap, verify=('full', 'size')[int(rng.integers(2))])
                if mmap and vmap.local_features is not None:  # grow the mapped index: it is read
                    # again from the file it was mapped from
                    vmap.add(0.0, None, vmap.descriptors[0], features=vmap.local_features.get(0))
                problem = mixed_problem(vmap, seeds)
                if problem:
                    findings[f'mixed load: {problem}'] += 1
            except MapBusyError:  # a reader outpaced by the writer on every attempt: said as such
                busy += 1
            except MapError as exc:
                findings[f'refused a complete map: {str(exc).split(": ", 1)[-1][:80]}'] += 1
            loads += 1
    finally:
        stop.set()
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    return {'findings': findings, 'loads': loads, 'busy': busy, 'saves': int(saves.value)}


# ----- shared ---------------------------------------------------------------------------------------
def _tree(path: str) -> dict[str, Any]:
    """Every entry under ``path`` (and ``path`` itself): file bytes, link targets, modes."""
    out: dict[str, Any] = {}
    if os.path.islink(path):
        return {'.': ('link', os.readlink(path))}
    if not os.path.isdir(path):
        return {'.': ('file', open(path, 'rb').read()) if os.path.exists(path) else ('absent',)}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                out[rel] = ('link', os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ('dir', os.stat(full).st_mode & 0o7777)
            else:
                out[rel] = ('file', open(full, 'rb').read(), os.stat(full).st_mode & 0o7777)
    return out


def _siblings(path: str) -> list[str]:
    base = os.path.basename(path)
    return [n for n in os.listdir(os.path.dirname(path)) if n.startswith((f'.{base}.tmp-', f'.{base}.old-'))]


def _mount_tmpfs(directory: str, size_kb: int) -> bool:
    os.makedirs(directory, exist_ok=True)
    return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size_kb}k', 'tmpfs', directory],
                          capture_output=True).returncode == 0


def _umount(directory: str) -> None:
    subprocess.run(['umount', '-l', directory], capture_output=True)


def _random_map(rng: np.random.Generator, places: int, dim: int = 64) -> VprMap:
    vmap = VprMap.empty({'name': 'hostile', 'config': {}, 'weights_fingerprint': 'none', 'dim': dim,
                         'multi_vector': False})
    vecs = rng.normal(size=(places, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(places):
        vmap.add(float(i), Pose.from_xy_yaw(float(i), 0.0, 0.0), vecs[i])
    return vmap


WRITE_CAUSES = ('no space left on device', 'disk quota exceeded', 'read-only file system',
                'permission denied', 'database or disk is full', 'device or resource busy',
                'input/output error', 'the file system is full or over its quota')


def _judge_save(what: str, path: str, before: dict[str, Any] | None, exc: BaseException | None,
                findings: Counter[str]) -> None:
    """A save either worked or failed in one line naming its cause, with the old map as it was."""
    if exc is not None:
        if not isinstance(exc, MapError):
            findings[f'{what}: {type(exc).__name__} escaped: {str(exc)[:80]}'] += 1
        elif '\n' in str(exc) or not any(c in str(exc) for c in WRITE_CAUSES):
            findings[f'{what}: message without its cause: {str(exc)[:100]}'] += 1
        if before is not None and _tree(path) != before:
            findings[f'{what}: the old map changed'] += 1
    if _siblings(path):
        findings[f'{what}: temporary sibling left'] += 1
    if os.path.isdir(path):
        try:
            VprMap.load(path)
        except MapError as err:
            findings[f'{what}: no loadable map afterwards: {str(err)[:80]}'] += 1


# ----- disk full ------------------------------------------------------------------------------------
def part_diskfull(seed: int, seconds: float, work: str, build_map_argv: list[str] | None = None,
                  cli: Any = None) -> dict[str, Any]:
    """Saves onto a small real tmpfs (root), else ENOSPC/EDQUOT/EROFS/EACCES injected at a random write."""
    import errno

    rng = np.random.default_rng(seed)
    findings: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    disk = os.path.join(work, 'diskfull')
    real = _mount_tmpfs(disk, 64)
    if real:
        _umount(disk)
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        if real:
            size_kb = int(rng.integers(96, 3000))
            _mount_tmpfs(disk, size_kb)
        else:
            os.makedirs(disk, exist_ok=True)
        try:
            path = os.path.join(disk, 'm')
            before = None
            try:
                _random_map(rng, int(rng.integers(5, 200))).save(path)
                before = _tree(path)
            except MapError:
                pass  # the first map did not fit: judged below like any other save
            if real and rng.random() < 0.5:  # another file takes most of what is left
                _fill(os.path.join(disk, 'filler'), int(rng.integers(0, 2 ** 20)))
            exc: BaseException | None = None
            if build_map_argv is not None and cli is not None and rounds % 5 == 0:
                rc, err = cli([*build_map_argv, '--out', path])
                errors = [line for line in err.splitlines() if ': error: ' in line]
                if rc not in (0, 2) or 'Traceback' in err or (rc == 2 and len(errors) != 1):
                    findings[f'build-map on a full disk: exit {rc}: {err.strip()[-100:]}'] += 1
                elif rc == 2 and not any(c in errors[0] for c in WRITE_CAUSES):
                    findings[f'build-map on a full disk: {errors[0][-100:]}'] += 1
                elif rc == 2 and before is not None and _tree(path) != before:
                    findings['build-map on a full disk: the old map changed'] += 1
                outcomes[f'build-map exit {rc}'] += 1
            else:
                restore = None if real else _inject(rng, errno)
                try:
                    _random_map(rng, int(rng.integers(5, 6000))).save(path)
                except BaseException as caught:  # noqa: BLE001 - judged
                    exc = caught
                finally:
                    if restore:
                        restore()
                outcomes['failed' if exc else 'saved'] += 1
                _judge_save('save', path, before, exc, findings)
        finally:
            if real:
                _umount(disk)
            else:
                shutil.rmtree(disk, ignore_errors=True)
    return {'findings': findings, 'rounds': rounds, 'outcomes': outcomes,
            'file_system': 'tmpfs' if real else 'injected OSError (no tmpfs mount here)'}


def _fill(path: str, leave: int) -> None:
    """Write zeros to ``path`` until the file system is full, then free ``leave`` bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b'\0' * 65536):
            pass
    except OSError:
        pass
    size = os.fstat(fd).st_size
    os.ftruncate(fd, max(0, size - leave))
    os.close(fd)


def _inject(rng: np.random.Generator, errno: Any) -> Any:
    """Make one random writer of a save fail with a random errno; returns the undo."""
    import sqlite3

    import faiss

    from vpr_ros.mapdb import integrity

    code = int(rng.choice([errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES]))

    def fail(*_a: Any, **_k: Any) -> None:
        raise OSError(code, os.strerror(code))

    def sqlite_full(*_a: Any, **_k: Any) -> None:
        raise sqlite3.OperationalError('database or disk is full')

    def faiss_short(_index: Any, name: str) -> None:
        raise RuntimeError(f'write error in {name}: 1 != 9 ({os.strerror(code)})')

    owner, attr, replacement = [(np, 'save', fail), (sqlite3, 'connect', sqlite_full),
                                (faiss, 'write_index', faiss_short), (integrity, 'exchange', fail),
                                (integrity, 'digest_files', fail)][int(rng.integers(5))]
    original = getattr(owner, attr)
    setattr(owner, attr, replacement)
    return lambda: setattr(owner, attr, original)


# ----- foreign folders ------------------------------------------------------------------------------
def _foreign_folder(kind: str, base: str, rng: np.random.Generator, a_map: str) -> str:
    path = os.path.join(base, kind)
    os.makedirs(base, exist_ok=True)
    if kind == 'nav2':
        os.makedirs(path)
        with open(os.path.join(path, 'map.yaml'), 'w') as fh:
            fh.write('image: office.pgm\nresolution: 0.05\norigin: [0, 0, 0]\nnegate: 0\n')
        with open(os.path.join(path, 'office.pgm'), 'wb') as fh:
            fh.write(b'P5\n2 2\n255\n' + bytes(rng.integers(0, 256, 4, dtype=np.uint8)))
    elif kind == 'map_with_user_file':
        shutil.copytree(a_map, path)
        with open(os.path.join(path, str(rng.choice(['NOTES.txt', 'calib.yaml', '.keep', 'lf_extra.npy']))),
                  'w') as fh:
            fh.write('mine')
    elif kind == 'symlink_to_map':
        os.symlink(a_map, path)
    elif kind == 'symlink_to_nav2':
        os.symlink(_foreign_folder('nav2', base + '_target', rng, a_map), path)
    elif kind == 'user_tree':
        names = ['map.yaml', 'descriptors.npy', 'data', 'notes', 'places.sqlite', 'x.bin', 'sub']
        for _ in range(int(rng.integers(1, 6))):
            depth = int(rng.integers(1, 3))
            rel = os.path.join(*[str(rng.choice(names)) + str(rng.integers(3)) for _ in range(depth)])
            full = os.path.join(path, rel)
            if os.path.isfile(os.path.dirname(full)):
                continue  # a file of an earlier draw has that name
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if not os.path.isdir(full):
                with open(full, 'wb') as fh:
                    fh.write(bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)))
        with open(os.path.join(path, 'map.yaml'), 'w') as fh:  # a map.yaml that is not ours
            fh.write(str(rng.choice(['image: a.pgm\n', 'encoder: {name: x}\n', '[1, 2]\n',
                                     'schema_version: 1\n'])))
    elif kind == 'a_file':
        os.makedirs(base, exist_ok=True)
        with open(path, 'w') as fh:
            fh.write('not a folder')
    elif kind == 'mount_point':
        if not _mount_tmpfs(path, 512):
            shutil.rmtree(path, ignore_errors=True)
            return ''
        shutil.copytree(a_map, path, dirs_exist_ok=True)  # even a real map: the swap cannot replace a mount
    return path


FOREIGN_KINDS = ('nav2', 'map_with_user_file', 'symlink_to_map', 'symlink_to_nav2', 'user_tree', 'a_file',
                 'mount_point')


def part_foreign(seed: int, seconds: float, work: str, cli: Any,
                 build_map_argv: list[str]) -> dict[str, Any]:
    """build-map and save() onto folders that are not vpr_ros maps: nothing in them may change, and
    build-map must refuse before it creates the encoder."""
    import vpr_ros.encoders as encoders

    rng = np.random.default_rng(seed)
    findings: Counter[str] = Counter()
    tried: Counter[str] = Counter()
    base = os.path.join(work, 'foreign')
    a_map = os.path.join(work, 'foreign_a_map')
    if not os.path.isdir(a_map):
        _random_map(rng, 20).save(a_map)
    created = Counter[str]()
    real_create = encoders.create_encoder

    def counting_create(*a: Any, **k: Any) -> Any:
        created['encoder'] += 1
        return real_create(*a, **k)

    encoders.create_encoder = counting_create
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(base + '_target', ignore_errors=True)
            kind = str(rng.choice(FOREIGN_KINDS))
            path = _foreign_folder(kind, base, rng, a_map)
            if not path:
                continue
            try:
                before = _tree(path)
                target_before = _tree(os.path.realpath(path))
                how = str(rng.choice(['build-map', 'save']))
                tried[f'{kind} via {how}'] += 1
                if how == 'build-map':
                    created.clear()
                    rc, err = cli([*build_map_argv, '--out', path])
                    if rc != 2 or 'Traceback' in err:
                        findings[f'{kind}: build-map exit {rc}'] += 1
                    elif created['encoder']:
                        findings[f'{kind}: refused only after the encoder was created'] += 1
                else:
                    try:
                        _random_map(rng, 5).save(path)
                        findings[f'{kind}: save() replaced it'] += 1
                    except MapError:
                        pass
                    except Exception as exc:  # noqa: BLE001 - that is the finding
                        findings[f'{kind}: {type(exc).__name__} escaped save()'] += 1
                if _tree(path) != before or _tree(os.path.realpath(path)) != target_before:
                    findings[f'{kind}: its files changed'] += 1
                if _siblings(os.path.abspath(path)):
                    findings[f'{kind}: temporary sibling left'] += 1
            finally:
                if kind == 'mount_point':
                    _umount(path)
    finally:
        encoders.create_encoder = real_create
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(base + '_target', ignore_errors=True)
    return {'findings': findings, 'tried': tried}


# ----- index specs ----------------------------------------------------------------------------------
_SPEC_NUMBERS = ['', '0', '1', '2', '3', '7', '8', '16', '17', '64', '255', '256', '512', '513', '65536',
                 '65537', str(1 << 20), str((1 << 20) + 1), str(2 ** 31 - 1), str(2 ** 31), str(2 ** 63),
                 '9' * 30, '0008', '\u0663', '\u00b2', '-1', '1e3', ' 4']


def random_spec(rng: np.random.Generator) -> str:
    """A spec near the grammar's edges: numbers at and past their limits, odd words and separators."""
    def num() -> str:
        return str(rng.choice(_SPEC_NUMBERS))
    kind = str(rng.choice(['flat', 'sq8', 'fp16', 'pq', 'hnsw', 'ivf', 'lsh', 'nsg', 'IVF', 'HNSW', 'rflat',
                           'pca', 'opq']))
    spec = kind + (num() if kind.lower() in ('pq', 'hnsw', 'ivf', 'nsg', 'pca', 'opq') else '')
    if rng.random() < 0.35:
        codes = str(rng.choice(['flat', 'fp16', 'sq8', 'pq', 'hnsw', 'ivf', '']))
        spec += ',' + codes + (num() if rng.random() < 0.5 else '')
    if rng.random() < 0.3:
        transform = str(rng.choice(['pca', 'opq'])) + num() + ('_' + num() if rng.random() < 0.3 else '')
        spec = transform + ',' + spec
    if rng.random() < 0.4:
        spec += '@' + num()
    if rng.random() < 0.1:
        spec = str(rng.choice([',', ' ', '@', ',,'])) + spec
    return spec


_SPEC_CHILD = r'''
import json, os, sys
import numpy as np
from vpr_ros.errors import ConfigError, MapError
from vpr_ros.mapdb.store import VprMap
from vpr_ros.frames import Pose
work = sys.argv[1]
identity = {'name': 'spec', 'config': {}, 'weights_fingerprint': 'none', 'dim': 16, 'multi_vector': False}
for line in sys.stdin:
    case = json.loads(line)
    spec, n, how = case['spec'], case['n'], case['how']
    print(json.dumps({'start': spec}), flush=True)
    rng = np.random.default_rng(n)
    vecs = rng.normal(size=(n, 16))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    path = os.path.join(work, 'spec_map')
    result = 'accepted'
    try:
        vmap = VprMap.empty(identity, index=spec if how == 'build' else 'flat')
        for i in range(n):
            vmap.add(float(i), None, vecs[i])
        vmap.save(path)
        if how == 'yaml':  # a map.yaml written before its digest, edited to name the spec
            import yaml
            meta = os.path.join(path, 'map.yaml')
            data = yaml.safe_load(open(meta))
            data.pop('manifest_sha256', None)
            data['index'] = spec
            yaml.safe_dump(data, open(meta, 'w'))
            os.remove(os.path.join(path, 'index.faiss'))
        loaded = VprMap.load(path)
        best = loaded.search(vecs[n // 2], 3)
        if not best or best[0].place_id != n // 2:
            result = 'unsearchable: ' + repr([m.place_id for m in best])
    except (ConfigError, MapError) as exc:
        result = 'refused' if '\n' not in str(exc) else 'refused in several lines'
    except Exception as exc:
        result = f'{type(exc).__name__}: {str(exc)[:80]}'
    print(json.dumps({'spec': spec, 'result': result}), flush=True)
'''


def part_specs(seed: int, seconds: float, work: str) -> dict[str, Any]:
    """Random edge specs through build (VprMap.empty/save/load/search) and through an edited map.yaml,
    in child processes: a signal (faiss abort/segfault), an exception other than a one-line refusal,
    or an accepted spec that cannot find a stored vector is a finding."""
    import json
    import sys

    rng = np.random.default_rng(seed)
    findings: Counter[str] = Counter()
    results: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    os.makedirs(work, exist_ok=True)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get('PYTHONPATH')]))}
    while time.monotonic() < deadline:
        cases = [{'spec': random_spec(rng), 'n': int(rng.choice([5, 60, 300])),
                  'how': str(rng.choice(['build', 'yaml']))} for _ in range(40)]
        child = subprocess.run([sys.executable, '-c', _SPEC_CHILD, work], input=''.join(
            json.dumps(c) + '\n' for c in cases), capture_output=True, text=True, timeout=600, env=env)
        done = [json.loads(line) for line in child.stdout.splitlines() if line.startswith('{')]
        for rec in done:
            if 'result' in rec:
                kind = rec['result'].split(':')[0]
                results[kind] += 1
                if kind not in ('accepted', 'refused'):
                    findings[f"{rec['spec']!r}: {rec['result']}"] += 1
        if child.returncode != 0:
            started = [rec['start'] for rec in done if 'start' in rec]
            findings[f'{started[-1] if started else "?"!r}: child died (exit {child.returncode})'] += 1
    return {'findings': findings, 'results': results}


# ----- fit memory -----------------------------------------------------------------------------------
def part_fitmem(frames: int = 20, size: tuple[int, int] = (2160, 3840)) -> dict[str, Any]:
    """build-map's fit images for 4K frames: held at the encoder's input size, same fitted state."""
    from bench_fit_memory import fit_rss, same_state

    findings: Counter[str] = Counter()
    full = fit_rss(frames, size, shrink=False)
    small = fit_rss(frames, size, shrink=True)
    input_mb = frames * 240 * 320 * 3 / 2**20  # anyloc_vlad's default input size
    if small['held_images_mb'] > 2 * input_mb:
        findings[f"fit images held {small['held_images_mb']} MB for {input_mb:.1f} MB of input"] += 1
    if not same_state(full['state'], small['state']):
        findings['the fit on the held images differs from the fit on the full frames'] += 1
    return {'findings': findings, 'full_frames_peak_rss_mb': full['peak_rss_mb'],
            'fit_images_peak_rss_mb': small['peak_rss_mb'], 'frames': frames, 'size': list(size)}

"""map.yaml: what a map holds and which encoder made it."""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from vpr_ros.errors import MapError

LEGACY_PRECISION = 'f32'  # the precision of maps whose encoder config does not record one

SCHEMA_VERSION = 1


@dataclass
class MapMeta:
    # Encoder.identity(): name, config, weights_fingerprint, dim, multi_vector
    encoder: dict[str, Any]
    count: int = 0                   # places
    vectors: int = 0                 # descriptor rows (== count for global encoders)
    dtype: str = 'float32'           # storage dtype of descriptors.npy
    index: str = 'flat'              # faiss index spec (see mapdb.index)
    schema_version: int = SCHEMA_VERSION
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))
    # The frame the place poses are expressed in (the pose topic's header.frame_id) and the body they
    # locate (Odometry child_frame_id); '' = unknown (maps written before vpr_ros recorded frames).
    frame_id: str = ''
    child_frame_id: str = ''
    build: dict[str, Any] = field(default_factory=dict)  # how it was built: sources, keyframing, timings
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, bytes} (integrity.py)

    @property
    def dim(self) -> int:
        return int(self.encoder['dim'])

    @property
    def multi_vector(self) -> bool:
        return bool(self.encoder.get('multi_vector', False))

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @staticmethod
    def from_yaml(text: str, source: str) -> 'MapMeta':
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise MapError(f'{source}: map.yaml is not valid YAML ({str(exc).splitlines()[0]})') from exc
        if not isinstance(data, dict) or 'encoder' not in data:
            raise MapError(f'{source}: map.yaml lacks the encoder section')
        version = data.get('schema_version')
        if version != SCHEMA_VERSION:
            raise MapError(f'{source}: map schema version {version} is not supported (this vpr_ros reads '
                           f'{SCHEMA_VERSION}); rebuild the map')
        problem = schema_problem(data)
        if problem:
            raise MapError(f'{source}: map.yaml is malformed ({problem})')
        known = set(MapMeta.__dataclass_fields__)
        return MapMeta(**{k: v for k, v in data.items() if k in known})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def schema_problem(data: dict[str, Any]) -> str | None:
    """What in a parsed map.yaml does not have the type and range MapMeta needs (None when fine).

    Fields unknown to this version are ignored (newer writers may add some).
    """
    enc = data.get('encoder')
    if not isinstance(enc, dict):
        return f'encoder must be a mapping, got {type(enc).__name__}'
    if not isinstance(enc.get('name'), str) or not enc['name']:
        return 'encoder.name must be a non-empty string'
    if not _is_int(enc.get('dim')) or enc['dim'] <= 0:
        return f"encoder.dim must be a positive integer, got {enc.get('dim')!r}"
    if not isinstance(enc.get('config', {}), dict):
        return f"encoder.config must be a mapping, got {type(enc.get('config')).__name__}"
    if not isinstance(enc.get('multi_vector', False), bool):
        return f"encoder.multi_vector must be true or false, got {enc.get('multi_vector')!r}"
    if not isinstance(enc.get('weights_fingerprint', ''), (str, type(None))):
        return 'encoder.weights_fingerprint must be a string'
    for key in ('count', 'vectors'):
        if key in data and (not _is_int(data[key]) or data[key] < 0):
            return f'{key} must be a non-negative integer, got {data[key]!r}'
    if data.get('dtype', 'float32') not in ('float32', 'float16'):
        return f"dtype must be float32 or float16, got {data.get('dtype')!r}"
    for key in ('index', 'created', 'frame_id', 'child_frame_id'):
        if key in data and not isinstance(data[key], str):
            return f'{key} must be a string, got {data[key]!r}'
    if not isinstance(data.get('build', {}), dict):
        return 'build must be a mapping'
    files = data.get('files', {})
    if not isinstance(files, dict):
        return 'files must be a mapping'
    for name, entry in files.items():
        if (not isinstance(name, str) or '/' in name or not isinstance(entry, dict)
                or not isinstance(entry.get('sha256'), str) or not _is_int(entry.get('bytes'))):
            return f'files.{name}: expected {{sha256: hex, bytes: size}}'
    return None


def compatibility_problems(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Why descriptors of ``wanted`` (an Encoder.identity()) cannot be searched in a map of ``stored``."""
    problems = []
    if stored.get('name') != wanted.get('name'):
        problems.append(f"map built with encoder {stored.get('name')!r}, requested {wanted.get('name')!r}")
        return problems
    # A map written before the precision key existed was built in f32.
    s_cfg = {'precision': LEGACY_PRECISION, **stored.get('config', {})}
    w_cfg = {'precision': LEGACY_PRECISION, **wanted.get('config', {})}
    for key in sorted(set(s_cfg) | set(w_cfg)):
        if s_cfg.get(key) != w_cfg.get(key):
            problems.append(f'config {key}: map {s_cfg.get(key)!r} vs requested {w_cfg.get(key)!r}')
    if stored.get('weights_fingerprint') != wanted.get('weights_fingerprint'):
        problems.append(f"weights differ: map {stored.get('weights_fingerprint')} vs "
                        f"requested {wanted.get('weights_fingerprint')}")
    if int(stored.get('dim', -1)) != int(wanted.get('dim', -2)):
        problems.append(f"dim: map {stored.get('dim')} vs requested {wanted.get('dim')}")
    if 'multi_vector' in wanted and bool(stored.get('multi_vector')) != bool(wanted['multi_vector']):
        problems.append(f"multi_vector: map {bool(stored.get('multi_vector'))} vs encoder "
                        f"{wanted['multi_vector']}")
    return problems

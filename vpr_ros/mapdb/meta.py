"""map.yaml: what a map holds and which encoder made it."""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from vpr_ros.errors import MapError
from vpr_ros.textio import load_yaml, short_repr

MANIFEST_MAX_BYTES = 16 << 20  # map.yaml: checksums, build info, sessions; far below this

LEGACY_PRECISION = 'f32'  # the precision of maps whose encoder config does not record one

SCHEMA_VERSION = 1
# Written into every map.yaml: the marker that says a folder is a vpr_ros map (a nav2 map_server folder
# also holds a map.yaml). Maps written before the marker are recognised by their schema and encoder.
MAP_FORMAT = 'vpr_ros.map'
# The last line of every map.yaml: the SHA-256 of the text above it. files: covers every other file,
# this covers map.yaml itself (an edited index spec or count is refused, not acted on). Maps written
# before it load with their manifest unverified, as they always did.
MANIFEST_DIGEST = 'manifest_sha256'
_DIGEST_LINE = re.compile(rf'{MANIFEST_DIGEST}: ([0-9a-f]{{64}})\n?')


@dataclass
class MapMeta:
    # Encoder.identity(): name, config, weights_fingerprint, dim, multi_vector
    encoder: dict[str, Any]
    format: str = MAP_FORMAT
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
    # the calibrated confidence model fitted on the map's own places (vpr_ros.matching.confidence);
    # {} = none yet (maps written before it existed are calibrated when loaded)
    confidence: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.encoder['dim'])

    @property
    def multi_vector(self) -> bool:
        return bool(self.encoder.get('multi_vector', False))

    def to_yaml(self) -> str:
        body = yaml.safe_dump(asdict(self), sort_keys=False)
        return f'{body}{MANIFEST_DIGEST}: {_sha256(body)}\n'

    @staticmethod
    def from_yaml(text: str, source: str) -> 'MapMeta':
        problem = manifest_problem(text)
        if problem:
            raise MapError(f'{source}: {problem}')
        data = load_yaml(text, f'{source}: map.yaml', MapError, MANIFEST_MAX_BYTES)
        if not isinstance(data, dict) or 'encoder' not in data:
            raise MapError(f'{source}: map.yaml lacks the encoder section')
        if data.get('format', MAP_FORMAT) != MAP_FORMAT:
            raise MapError(f"{source}: map.yaml is not a vpr_ros map "
                           f"(format {short_repr(data.get('format'))})")
        version = data.get('schema_version')
        if version != SCHEMA_VERSION:
            raise MapError(f'{source}: map schema version {version} is not supported (this vpr_ros reads '
                           f'{SCHEMA_VERSION}); rebuild the map')
        problem = schema_problem(data)
        if problem:
            raise MapError(f'{source}: map.yaml is malformed ({problem})')
        known = set(MapMeta.__dataclass_fields__)
        return MapMeta(**{k: v for k, v in data.items() if k in known})


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def manifest_problem(text: str) -> str | None:
    """Why map.yaml's text is not what was written (None: it is, or it predates the digest)."""
    body_end = text.rfind(f'\n{MANIFEST_DIGEST}:') + 1
    if body_end == 0:
        return ('map.yaml has a damaged manifest digest line' if text.startswith(f'{MANIFEST_DIGEST}:')
                else None)
    found = _DIGEST_LINE.fullmatch(text, body_end)
    if found is None:
        return f'map.yaml has a damaged {MANIFEST_DIGEST} line (it must be the last line, 64 hex digits)'
    if found.group(1) != _sha256(text[:body_end]):
        return ('map.yaml was changed after the map was written (its text does not match its '
                f'{MANIFEST_DIGEST}); restore it or rebuild the map')
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_map_manifest(data: Any) -> bool:
    """Whether a parsed map.yaml is a vpr_ros map's: the format marker, or (maps written before the
    marker) a schema version and an encoder section, which a nav2 or other map.yaml does not have."""
    if not isinstance(data, dict):
        return False
    if 'format' in data:
        return data['format'] == MAP_FORMAT
    enc = data.get('encoder')
    return (_is_int(data.get('schema_version')) and isinstance(enc, dict)
            and isinstance(enc.get('name'), str) and 'dim' in enc)


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
        return f"encoder.dim must be a positive integer, got {short_repr(enc.get('dim'))}"
    if not isinstance(enc.get('config', {}), dict):
        return f"encoder.config must be a mapping, got {type(enc.get('config')).__name__}"
    if not isinstance(enc.get('multi_vector', False), bool):
        return f"encoder.multi_vector must be true or false, got {short_repr(enc.get('multi_vector'))}"
    if not isinstance(enc.get('weights_fingerprint', ''), (str, type(None))):
        return 'encoder.weights_fingerprint must be a string'
    for key in ('count', 'vectors'):
        if key in data and (not _is_int(data[key]) or data[key] < 0):
            return f'{key} must be a non-negative integer, got {short_repr(data[key])}'
    if data.get('dtype', 'float32') not in ('float32', 'float16'):
        return f"dtype must be float32 or float16, got {short_repr(data.get('dtype'))}"
    for key in ('index', 'created', 'frame_id', 'child_frame_id'):
        if key in data and not isinstance(data[key], str):
            return f'{key} must be a string, got {short_repr(data[key])}'
    if not isinstance(data.get('build', {}), dict):
        return 'build must be a mapping'
    if not isinstance(data.get('confidence', {}), dict):
        return 'confidence must be a mapping'
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
        problems.append(f"map built with encoder {short_repr(stored.get('name'))}, "
                        f"requested {short_repr(wanted.get('name'))}")
        return problems
    # A map written before the precision key existed was built in f32.
    s_cfg = {'precision': LEGACY_PRECISION, **stored.get('config', {})}
    w_cfg = {'precision': LEGACY_PRECISION, **wanted.get('config', {})}
    for key in sorted(set(s_cfg) | set(w_cfg)):
        if s_cfg.get(key) != w_cfg.get(key):
            problems.append(f'config {key}: map {short_repr(s_cfg.get(key))} '
                            f'vs requested {short_repr(w_cfg.get(key))}')
    if stored.get('weights_fingerprint') != wanted.get('weights_fingerprint'):
        problems.append(f"weights differ: map {stored.get('weights_fingerprint')} vs "
                        f"requested {wanted.get('weights_fingerprint')}")
    if int(stored.get('dim', -1)) != int(wanted.get('dim', -2)):
        problems.append(f"dim: map {stored.get('dim')} vs requested {wanted.get('dim')}")
    if 'multi_vector' in wanted and bool(stored.get('multi_vector')) != bool(wanted['multi_vector']):
        problems.append(f"multi_vector: map {bool(stored.get('multi_vector'))} vs encoder "
                        f"{wanted['multi_vector']}")
    return problems

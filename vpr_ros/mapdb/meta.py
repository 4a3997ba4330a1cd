"""map.yaml: what a map holds and which encoder made it."""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from vpr_ros.errors import MapError

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
    build: dict[str, Any] = field(default_factory=dict)  # how it was built: sources, keyframing, timings

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
        known = set(MapMeta.__dataclass_fields__)
        try:
            return MapMeta(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise MapError(f'{source}: map.yaml is malformed ({exc})') from exc


def compatibility_problems(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Why descriptors of ``wanted`` (an Encoder.identity()) cannot be searched in a map of ``stored``."""
    problems = []
    if stored.get('name') != wanted.get('name'):
        problems.append(f"map built with encoder {stored.get('name')!r}, requested {wanted.get('name')!r}")
        return problems
    s_cfg, w_cfg = stored.get('config', {}), wanted.get('config', {})
    for key in sorted(set(s_cfg) | set(w_cfg)):
        if s_cfg.get(key) != w_cfg.get(key):
            problems.append(f'config {key}: map {s_cfg.get(key)!r} vs requested {w_cfg.get(key)!r}')
    if stored.get('weights_fingerprint') != wanted.get('weights_fingerprint'):
        problems.append(f"weights differ: map {stored.get('weights_fingerprint')} vs "
                        f"requested {wanted.get('weights_fingerprint')}")
    if int(stored.get('dim', -1)) != int(wanted.get('dim', -2)):
        problems.append(f"dim: map {stored.get('dim')} vs requested {wanted.get('dim')}")
    return problems

"""The map database: places (SQLite), descriptors (.npy), a faiss index, and map.yaml metadata."""
from vpr_ros.mapdb.meta import SCHEMA_VERSION, MapMeta
from vpr_ros.mapdb.store import Match, Place, VprMap

__all__ = ['SCHEMA_VERSION', 'MapMeta', 'Match', 'Place', 'VprMap']

"""Reading text a user hands vpr_ros, bounded: YAML, UTF-8 files, and values shown in messages.

Every YAML the package parses (``--config``, ``--set``, the node's ``encoder_config``, map.yaml,
camera_info, training manifests) goes through :func:`load_yaml`: the text is capped in size, and
the parsed document in nesting depth and in its size *with aliases expanded* (a 1 kB alias bomb
expands to 10^9 nodes: PyYAML builds it as shared references in no time, but anything that walks
or formats the value then hangs). Files are read by :func:`read_text`: regular files only (a FIFO
would block forever), strict UTF-8 (one Latin-1 byte is a one-line error naming its offset).
:func:`short_repr` is the one way a user-given value enters a message: bounded whatever its size.
"""
from __future__ import annotations

import os
import reprlib
import stat
from typing import Any

import yaml

from vpr_ros.errors import ConfigError, VprError

MAX_CONFIG_BYTES = 1 << 20          # --config, --set, encoder_config, camera_info, run manifests
MAX_YAML_NODES = 100_000            # scalars + collections after alias expansion
MAX_YAML_DEPTH = 100                # nested collections

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters without ever formatting more of it than is shown
    (reprlib stops at a few levels and items: an alias-bomb list costs nothing to show)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


class YamlLimitError(yaml.YAMLError):
    """A YAML document beyond the size, depth or alias-expansion bounds (a YAMLError, so every
    handler of malformed YAML handles it too)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting and documents whose alias-expanded size is too large."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # Checked in the scanner, not only when composing: every open '[' or '{' may start a simple key,
        # and PyYAML scans ahead over all of them at a cost per token that grows with the depth, so
        # 50 000 nested '[' took 5 s before the composer ever saw level 101.
        if self.flow_level >= MAX_YAML_DEPTH:
            raise YamlLimitError(f'nested deeper than {MAX_YAML_DEPTH} levels')
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f'nested deeper than {MAX_YAML_DEPTH} levels')
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        _check_expanded_size(node)
        return super().construct_document(node)


def _check_expanded_size(root: Any) -> None:
    """Count the nodes of the document as if every alias were a copy; refuse beyond the bound.

    Each distinct node is sized once (memoised), so the count itself is cheap; a node met again
    while its own size is being computed is a recursive alias (``&a [*a]``), which has no finite
    expansion."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            in_progress.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > MAX_YAML_NODES:
                raise YamlLimitError(f'expands to more than {MAX_YAML_NODES} values '
                                     '(aliases counted as copies)')
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in in_progress:
            raise YamlLimitError('holds a recursive alias (a value that contains itself)')
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str | bytes, what: str, error: type[VprError] = ConfigError,
              max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Parse one YAML document within the bounds above; any failure is ``error`` naming ``what``."""
    if len(text) > max_bytes:
        raise error(f'{what} is larger than {max_bytes} bytes')
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlLimitError as exc:
        raise error(f'{what} is refused: its YAML {exc}') from exc
    except RecursionError as exc:
        raise error(f'{what} is refused: its YAML is nested too deeply') from exc
    except yaml.YAMLError as exc:
        raise error(f'{what} is not valid YAML ({str(exc).splitlines()[0]})') from exc


def read_text(path: str, what: str, error: type[VprError] = ConfigError,
              max_bytes: int | None = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``; ``error`` naming ``what`` and the cause otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))  # a FIFO must not block the open
    except OSError as exc:
        raise error(f'cannot read {what} {path}: {exc.strerror}') from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = 'a directory' if stat.S_ISDIR(mode) else 'not a regular file'
        raise error(f'{what} {path} is {kind}')
    with os.fdopen(fd, 'rb') as fh:
        try:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(f'cannot read {what} {path}: {exc.strerror}') from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f'{what} {path} is larger than {max_bytes} bytes')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = data.count(b'\n', 0, exc.start) + 1
        raise error(f'{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}, '
                    f'offset {exc.start})') from exc


def load_yaml_file(path: str, what: str, error: type[VprError] = ConfigError,
                   max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """:func:`read_text` + :func:`load_yaml`."""
    return load_yaml(read_text(path, what, error, max_bytes), f'{what} {path}', error, max_bytes)


__all__ = ['MAX_CONFIG_BYTES', 'MAX_YAML_DEPTH', 'MAX_YAML_NODES', 'YamlLimitError', 'load_yaml',
           'load_yaml_file', 'read_text', 'short_repr']

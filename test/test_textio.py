"""Bounded YAML, strict UTF-8 regular-file reads and short reprs (vpr_ros/textio.py)."""
import os
import time

import pytest
import yaml

from vpr_ros.errors import ConfigError, MapError
from vpr_ros.textio import MAX_YAML_NODES, load_yaml, load_yaml_file, read_text, short_repr


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The 'billion laughs' YAML: under 1 kB, 9^9 values once every alias is expanded."""
    lines = ['a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    for i in range(1, levels):
        lines.append(f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * width) + ']')
    return '\n'.join(lines) + '\n'


def test_plain_documents_and_shared_anchors_load() -> None:
    assert load_yaml('{threads: 2, image_size: [96, 128]}', 'x') == {'threads': 2, 'image_size': [96, 128]}
    assert load_yaml('base: &b {k: 1}\nother: *b\n', 'x') == {'base': {'k': 1}, 'other': {'k': 1}}
    assert load_yaml('', 'x') is None


@pytest.mark.parametrize('text,message', [
    (alias_bomb(), f'expands to more than {MAX_YAML_NODES} values'),
    ('&a [*a]', 'recursive alias'),
    ('[' * 5000 + ']' * 5000, 'nested deeper than'),
    ('x: [1, 2', 'is not valid YAML'),
    ('!!python/object/apply:os.system ["true"]', 'is not valid YAML'),
])
def test_hostile_yaml_is_one_error_in_bounded_time(text: str, message: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_yaml(text, '--set pca_dim')
    assert time.perf_counter() - t0 < 5.0


def test_deep_flow_nesting_is_refused_while_scanning() -> None:
    """PyYAML's scanner looks ahead over every open bracket: 50 000 of them took 5.5 s (quadratic)
    before the composer reached level 101."""
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match='nested deeper than'):
        load_yaml('[' * 50_000 + ']' * 50_000, '--config')
    assert time.perf_counter() - t0 < 2.0


def test_yaml_larger_than_the_cap_is_refused_before_parsing() -> None:
    with pytest.raises(MapError, match='larger than 100 bytes'):
        load_yaml('x: ' + 'y' * 200, 'map.yaml', MapError, max_bytes=100)


def test_short_repr_of_an_expanded_alias_bomb_is_short_and_fast() -> None:
    value = yaml.safe_load(alias_bomb())  # PyYAML builds it as shared references, instantly
    t0 = time.perf_counter()
    text = short_repr(value)
    assert len(text) <= 120 and time.perf_counter() - t0 < 1.0
    assert short_repr('x' * 10_000).endswith("...'") or len(short_repr('x' * 10_000)) <= 120


def test_read_text_refuses_non_utf8_fifos_and_directories(tmp_path) -> None:
    latin = tmp_path / 'config.yaml'
    latin.write_bytes(b'name: caf\xe9\n')
    with pytest.raises(ConfigError, match=r'not UTF-8 text \(byte 0xe9 on line 1, offset 9\)'):
        read_text(str(latin), '--config')
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match='not a regular file'):
        read_text(fifo, '--config')  # with no writer, an open() without O_NONBLOCK blocks forever
    assert time.perf_counter() - t0 < 5.0
    with pytest.raises(ConfigError, match='is a directory'):
        read_text(str(tmp_path), '--config')
    with pytest.raises(ConfigError, match='cannot read --config'):
        read_text(str(tmp_path / 'absent'), '--config')
    big = tmp_path / 'big.yaml'
    big.write_text('x' * 2000)
    with pytest.raises(ConfigError, match='larger than 1000 bytes'):
        load_yaml_file(str(big), '--config', max_bytes=1000)

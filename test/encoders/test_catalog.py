"""The encoder catalogue: one row per encoder (+ released variants), sizes derived from dims."""
import pytest

from vpr_ros.encoders import available_encoders
from vpr_ros.encoders.catalog import encoder_table
from vpr_ros.errors import ConfigError


def test_table_rows():
    rows = encoder_table(['boq', 'salad', 'mixvpr', 'raw_pixels'])
    by = {(r['name'], r['config']): r for r in rows}
    boq = by[('boq', '')]
    assert boq['dim'] == 16384 and boq['input_size'] == '384x384'
    assert boq['bytes_fp32'] == 65536 and boq['bytes_fp16'] == 32768
    assert 23_800_000 < boq['parameters'] < 23_900_000  # ResNet-50 to layer3 (8.54 M) + BoQ (15.30 M)
    dino = by[('boq', 'backbone=dinov2_vitb14')]
    assert dino['dim'] == 12288 and dino['input_size'] == '322x322'
    assert by[('salad', '')]['dim'] == 8448
    assert {by[('mixvpr', c)]['dim'] for c in ('', 'out_dim=512', 'out_dim=128')} == {4096, 512, 128}
    raw = by[('raw_pixels', '')]
    assert raw['parameters'] == 0 and raw['per'] == 'image'
    for r in rows:
        assert set(r) == {'name', 'config', 'dim', 'input_size', 'parameters', 'bytes_fp32', 'bytes_fp16',
                          'per', 'fits_on_map', 'description'}


def test_all_encoders_listed():
    names = {r['name'] for r in encoder_table()}
    assert names == set(available_encoders())


def test_unknown_name():
    with pytest.raises(ConfigError, match='unknown encoder'):
        encoder_table(['nope'])

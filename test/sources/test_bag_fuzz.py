"""Seeded fuzzing of the bag reader: a corrupted bag yields frames, counted skips or one SourceError."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test.helpers import textured_frames
from vpr_ros.errors import SourceError
from vpr_ros.sources.bag import BagSource, write_bag

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MUTATIONS = st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                     min_size=1, max_size=8)


@pytest.fixture(scope='module')
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for storage in ('sqlite3', 'mcap'):
        path = str(tmp_path_factory.mktemp('fuzz') / storage)
        write_bag(path, textured_frames(6, size=(32, 32)), storage=storage)
        out[storage] = path
    return out


def read_all(path: str) -> None:
    try:
        src = BagSource(path)
        frames = list(src.frames())
    except SourceError as exc:
        assert '\n' not in str(exc)
        return
    for frame in frames:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@FUZZ
@given(mutations=MUTATIONS, truncate=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_corrupted_bag_is_read_or_refused_in_one_line(bags, storage, mutations, truncate) -> None:
    logging.disable(logging.WARNING)  # each example logs its first skip of a kind
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bag = shutil.copytree(bags[storage], os.path.join(tmp, 'b'))
            name = next(n for n in os.listdir(bag) if n.endswith(('.db3', '.mcap')))
            with open(os.path.join(bag, name), 'rb') as fh:
                data = bytearray(fh.read())
            for where, value in mutations:
                data[int(where * len(data))] = value
            if truncate is not None:
                data = data[:int(truncate * len(data))]
            with open(os.path.join(bag, name), 'wb') as fh:
                fh.write(data)
            read_all(bag)
    finally:
        logging.disable(logging.NOTSET)

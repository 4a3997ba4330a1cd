"""Readers never see a mixed map: loads racing a process that keeps replacing the map (issue 23)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))

from hostile_maps import race_loads, race_map  # noqa: E402

from vpr_ros.mapdb.store import VprMap  # noqa: E402


def test_loads_racing_saves_are_never_mixed_nor_refused(tmp_path):
    result = race_loads(str(tmp_path / 'm'), seconds=8.0, seed=0)
    # the race did happen and loads got through it (one outpaced on every attempt says so: 'busy')
    assert result['saves'] > 10 and result['loads'] - result['busy'] > 10, result
    assert not result['findings'], result


def test_a_mapped_index_grows_from_the_file_it_was_mapped_from(tmp_path):
    path = str(tmp_path / 'm')
    race_map('save-1', 1).save(path)
    vmap = VprMap.load(path, mmap=True)
    race_map('save-2', 2).save(path)  # the path now names another map
    vmap.add(0.0, None, vmap.descriptors[0], features=vmap.local_features.get(0))
    assert abs(vmap.index.reconstruct(5) - vmap.descriptors[5]).max() < 1e-6


def test_an_optional_file_the_manifest_records_is_never_read_as_absent(tmp_path):
    # A save deleting the old version removes its files one by one: a recorded local_features.yaml
    # that is gone means "being replaced" (load again), not "this map has no local features".
    import pytest

    from vpr_ros.errors import MapError

    path = str(tmp_path / 'm')
    race_map('save-1', 1).save(path)
    os.remove(os.path.join(path, 'local_features.yaml'))
    with pytest.raises(MapError):
        VprMap.load(path, verify='none')

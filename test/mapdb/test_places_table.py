"""The columnar places table behind VprMap.places (store.PlaceTable)."""
import sqlite3

import numpy as np
import pytest

from vpr_ros.errors import MapError
from vpr_ros.frames import Pose
from vpr_ros.mapdb.store import Place, PlaceTable, VprMap

IDENTITY = {'name': 'fake', 'config': {}, 'weights_fingerprint': 'none', 'dim': 4, 'multi_vector': False}


def _places():
    return [Place(0, 1.5, Pose((1.0, 2.0, 3.0), (0.0, 0.0, 0.6, 0.8)), 'bag_a'),
            Place(1, 2.5, None, ''),
            Place(2, 3.5, Pose.from_xy_yaw(-4.0, 5.0, 1.0), 'bag_b'),
            Place(3, 4.5, Pose.from_xy_yaw(7.0, 8.0, 0.0), 'bag_a')]


def test_table_is_a_sequence_of_the_places_it_was_made_of():
    places = _places()
    table = PlaceTable.of(places)
    assert len(table) == 4 and list(table) == places and table == places
    assert table[-1] == places[3] and table[1:3] == places[1:3]
    assert table.stamps.tolist() == [1.5, 2.5, 3.5, 4.5]
    assert table.has_pose.tolist() == [True, False, True, True]
    assert table.poses[0].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.6, 0.8]
    assert np.isnan(table.poses[1]).all()
    with pytest.raises(IndexError):
        table[4]


def test_extend_appends_columns_and_maps_source_names():
    places = _places()
    table = PlaceTable.of(places[:2])
    later = places[2:] + places[:1]
    other = PlaceTable.of([Place(i, p.stamp, p.pose, p.source) for i, p in enumerate(later)])
    table.extend(other)
    assert len(table) == 5
    assert [(p.id, p.stamp, p.pose, p.source) for p in table] == [
        (i, p.stamp, p.pose, p.source) for i, p in enumerate(places[:2] + places[2:] + places[:1])]


def test_table_refuses_ids_out_of_order_and_non_finite_poses():
    with pytest.raises(MapError, match='row 0 has id 1'):
        PlaceTable.of([Place(1, 0.0, None)])
    with pytest.raises(MapError, match='finite'):
        PlaceTable().append(0.0, Pose((float('nan'), 0.0, 0.0)))


def test_map_roundtrip_keeps_columns_and_grows_after_load(tmp_path):
    vmap = VprMap.empty(IDENTITY)
    vecs = np.eye(4, dtype=np.float32)
    for p, v in zip(_places(), vecs):
        vmap.add(p.stamp, p.pose, v, p.source)
    vmap.save(str(tmp_path / 'm'))
    loaded = VprMap.load(str(tmp_path / 'm'), mmap=True)
    assert isinstance(loaded.places, PlaceTable) and list(loaded.places) == _places()
    assert loaded.place(2).pose.position == pytest.approx((-4.0, 5.0, 0.0), abs=1e-12)
    added = loaded.add(9.0, None, vecs[0], 'bag_c')
    assert added == Place(4, 9.0, None, 'bag_c') and loaded.places[4] == added
    assert loaded.search(vecs[2], 1)[0].pose == _places()[2].pose


def test_places_read_in_chunks_match_one_read(tmp_path):
    vmap = VprMap.empty(IDENTITY)
    rng = np.random.default_rng(0)
    for i in range(50):
        pose = None if i % 7 == 3 else Pose.from_xy_yaw(*rng.normal(size=3))
        vmap.add(float(i), pose, rng.normal(size=4), f's{i % 3}')
    vmap.save(str(tmp_path / 'm'))
    from vpr_ros.mapdb.store import _read_places

    whole, _ = _read_places(str(tmp_path / 'm' / 'places.sqlite'))
    chunked, _ = _read_places(str(tmp_path / 'm' / 'places.sqlite'), chunk=8)
    assert list(whole) == list(chunked) == list(vmap.places)


@pytest.mark.parametrize('column, value, message', [
    ('stamp', "'soon'", 'place 1: stamp and pose must be numbers'),
    ('x', 'NULL', 'place 1: stamp and pose must be numbers'),
    ('source', "X'07'", 'place 1: source must be text'),
    ('id', '5', r'row 1 has id 2'),  # ordered by id: 0, 2, 3, 5
])
def test_bad_place_rows_name_the_place(tmp_path, column, value, message):
    vmap = VprMap.empty(IDENTITY)
    for p, v in zip(_places(), np.eye(4, dtype=np.float32)):
        vmap.add(p.stamp, p.pose, v, p.source)
    path = tmp_path / 'm'
    vmap.save(str(path))
    with sqlite3.connect(path / 'places.sqlite') as db:
        db.execute(f'UPDATE places SET {column} = {value} WHERE id = 2' if column == 'x' else
                   f'UPDATE places SET {column} = {value} WHERE id = 1')
    db.close()
    if column == 'x':
        message = message.replace('place 1', 'place 2')
    with pytest.raises(MapError, match=message):
        VprMap.load(str(path), verify='none')

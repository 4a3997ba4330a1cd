"""encoder_for_map: maps written before a config key existed keep working."""
import numpy as np

from test.helpers import textured_frames
from vpr_ros.encoders import create_encoder
from vpr_ros.localization import Localizer
from vpr_ros.mapdb.store import VprMap


def test_map_from_before_the_centres_key_loads_as_unit_centres(tmp_path):
    frames = textured_frames(4, size=(60, 80))
    encoder = create_encoder('anyloc_vlad', {'image_size': [64, 96], 'num_clusters': 4, 'centres': 'unit'})
    encoder.fit([f.rgb for f in frames])
    identity = encoder.identity()
    del identity['config']['centres']  # as an older vpr_ros wrote map.yaml
    vmap = VprMap.empty(identity, encoder_state=encoder.get_state())
    for f, v in zip(frames, encoder.encode([f.rgb for f in frames])):
        vmap.add(f.stamp, f.pose, v)
    vmap.save(str(tmp_path / 'old'))
    loc = Localizer.from_map(str(tmp_path / 'old'))
    assert loc.encoder.config['centres'] == 'unit'
    rgb = [frames[1].rgb]
    np.testing.assert_allclose(loc.encoder.encode(rgb), encoder.encode(rgb), atol=1e-6)
    assert loc.localize(frames[1].rgb, 0.0).best.place_id == 1


def test_time_neighbours_are_the_adjacent_places_in_map_time():
    from vpr_ros.localization import IdentityOnly

    identity = {'name': 'plain', 'config': {}, 'dim': 4, 'multi_vector': False}
    vmap = VprMap.empty(identity)
    for stamp in (30.0, 10.0, 20.0, 40.0):  # a merged map: ids are not in time order
        vmap.add(stamp, None, np.eye(4, dtype=np.float32)[:1])
    loc = Localizer(vmap, IdentityOnly(identity))
    neighbours = loc.time_neighbours(0, 0.5)
    assert [(m.place_id, m.stamp, m.score) for m in neighbours] == [(2, 20.0, 0.5), (3, 40.0, 0.5)]
    assert [m.place_id for m in loc.time_neighbours(1, 0.5)] == [2]  # the earliest place has one neighbour
    vmap.add(25.0, None, np.eye(4, dtype=np.float32)[:1])  # a place added later is seen
    assert [m.place_id for m in loc.time_neighbours(0, 0.5)] == [4, 3]


def test_localize_once_answers_like_a_first_frame_and_leaves_the_run_untouched():
    from vpr_ros.matching.sequence import SequenceConfig

    frames = textured_frames(6, size=(48, 64))
    encoder = create_encoder('raw_pixels')
    vmap = VprMap.empty(encoder.identity())
    for f, v in zip(frames, encoder.encode([f.rgb for f in frames])):
        vmap.add(f.stamp, f.pose, v)
    loc = Localizer(vmap, encoder, top_k=3, sequence=SequenceConfig(length=3, spacing='frames'))
    streamed = loc.localize(frames[0].rgb, 100.0)
    history, previous = loc._sequence.history, loc._previous_top
    matches, confidence = loc.localize_once(frames[2].rgb)
    plain = loc.map.search(encoder.encode([frames[2].rgb])[0], 3)
    assert [m.place_id for m in matches] == [m.place_id for m in plain]
    assert matches[0].place_id == 2 and len(matches) == 3
    assert loc._sequence.history == history and loc._previous_top is previous  # the run is not touched
    assert np.isnan(confidence) or 0.0 <= confidence <= 1.0
    assert streamed.best.place_id == 0

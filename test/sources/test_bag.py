import numpy as np
import pytest

from test.helpers import textured_frames
from vpr_ros.errors import SourceError
from vpr_ros.frames import Frame, Pose
from vpr_ros.sources.bag import BagSource, PoseTrack, write_bag


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('compressed', [False, True])
def test_roundtrip_with_interpolated_poses(tmp_path, storage, compressed):
    frames = textured_frames(4, size=(24, 32))
    odom = [(99.0 + 0.25 * j, Pose.from_xy_yaw(10.0 * (99.0 + 0.25 * j - 100.0), 0.0, 0.0))
            for j in range(24)]
    path = str(tmp_path / 'bag')
    write_bag(path, frames, storage=storage, compressed=compressed, poses=odom)
    src = BagSource(path)
    out = list(src.frames())
    assert [f.stamp for f in out] == pytest.approx([f.stamp for f in frames])
    assert out[2].pose.position[0] == pytest.approx(20.0)
    tol = 12 if compressed else 0
    assert np.abs(out[1].rgb.astype(int) - frames[1].rgb).mean() <= tol


def test_images_outside_pose_coverage_are_counted(tmp_path):
    frames = textured_frames(5, size=(16, 16))
    odom = [(100.0 + 0.5 * j, Pose.from_xy_yaw(j, 0, 0)) for j in range(5)]  # covers 100..102 s
    write_bag(str(tmp_path / 'b'), frames, poses=odom)
    src = BagSource(str(tmp_path / 'b'))
    assert len(list(src.frames())) == 3
    assert src.skips.as_dict() == {'no pose coverage': 2}


def test_no_coverage_at_all_is_an_error(tmp_path):
    frames = textured_frames(2, size=(16, 16))
    write_bag(str(tmp_path / 'b'), frames, poses=[(5.0, Pose((0, 0, 0))), (6.0, Pose((1, 0, 0)))])
    with pytest.raises(SourceError, match='no image'):
        list(BagSource(str(tmp_path / 'b')).frames())


def test_missing_topic_and_missing_bag(tmp_path):
    write_bag(str(tmp_path / 'b'), textured_frames(1, size=(16, 16)))
    with pytest.raises(SourceError, match='no topic /nope'):
        BagSource(str(tmp_path / 'b'), image_topic='/nope')
    with pytest.raises(SourceError, match='not found'):
        BagSource(str(tmp_path / 'missing'))


def test_empty_bag(tmp_path):
    write_bag(str(tmp_path / 'b'), [])
    with pytest.raises(SourceError, match='no image topic'):
        BagSource(str(tmp_path / 'b'))


def _raw_bag(path, images, pose_raw=None):
    """A bag of Image messages (encoding, width, step, data) at 100, 101, ... s, height 16, with a
    PoseStamped stream over 99..103.5 s; ``pose_raw`` replaces the serialised pose at 101 s."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.LATEST)
    T = ts.types
    with Writer(path, version=9) as w:
        ci = w.add_connection('/cam', 'sensor_msgs/msg/Image', typestore=ts)
        co = w.add_connection('/odom', 'geometry_msgs/msg/PoseStamped', typestore=ts)
        for i, (enc, width, step, data) in enumerate(images):
            hdr = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=100 + i, nanosec=0),
                                           frame_id='c')
            img = T['sensor_msgs/msg/Image'](header=hdr, height=16, width=width, encoding=enc, is_bigendian=0,
                                             step=step, data=np.asarray(data, np.uint8))
            w.write(ci, (100 + i) * 10**9, ts.serialize_cdr(img, 'sensor_msgs/msg/Image'))
        for t in np.arange(99.0, 104.0, 0.5):
            stamp = T['builtin_interfaces/msg/Time'](sec=int(t), nanosec=int(t % 1 * 1e9))
            hdr = T['std_msgs/msg/Header'](stamp=stamp, frame_id='map')
            pose = T['geometry_msgs/msg/Pose'](
                position=T['geometry_msgs/msg/Point'](x=float(t), y=0.0, z=0.0),
                orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
            raw = ts.serialize_cdr(T['geometry_msgs/msg/PoseStamped'](header=hdr, pose=pose),
                                   'geometry_msgs/msg/PoseStamped')
            w.write(co, int(t * 10**9), pose_raw if pose_raw is not None and t == 101.0 else raw)


GOOD_16 = textured_frames(1, size=(16, 16))[0].rgb.reshape(-1)


def test_bad_images_in_a_bag_are_counted_skips(tmp_path):
    _raw_bag(str(tmp_path / 'b'), [('rgb8', 16, 48, GOOD_16), ('rgb8', 16, 48, np.zeros(10)),
                                   ('nonsense', 16, 48, np.zeros(768))])
    src = BagSource(str(tmp_path / 'b'))
    out = list(src.frames())
    assert len(out) == 1 and out[0].pose.position[0] == pytest.approx(100.0)
    assert src.skips.as_dict() == {'truncated image': 1, 'unknown encoding': 1}


def test_pose_track_slerp_and_gaps():
    track = PoseTrack([0.0, 1.0, 5.0], [Pose.from_xy_yaw(0, 0, 0), Pose.from_xy_yaw(2, 0, 1.0),
                                        Pose.from_xy_yaw(9, 0, 1.0)])
    mid = track.at(0.5)
    assert mid.position[0] == pytest.approx(1.0) and mid.yaw == pytest.approx(0.5)
    assert track.at(3.0) is None  # 4 s gap: not interpolated across
    assert track.at(-1.0) is None


def test_refuses_to_overwrite(tmp_path):
    write_bag(str(tmp_path / 'b'), [Frame(1.0, np.zeros((8, 8, 3), np.uint8))])
    with pytest.raises(SourceError, match='refusing'):
        write_bag(str(tmp_path / 'b'), [])


def test_several_pose_topics_must_be_named(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.LATEST)
    with Writer(str(tmp_path / 'b'), version=9) as w:
        w.add_connection('/cam', 'sensor_msgs/msg/Image', typestore=ts)
        w.add_connection('/odom_a', 'nav_msgs/msg/Odometry', typestore=ts)
        w.add_connection('/odom_b', 'nav_msgs/msg/Odometry', typestore=ts)
    with pytest.raises(SourceError, match='several pose topics'):
        BagSource(str(tmp_path / 'b'), image_topic='/cam')



def test_odd_width_yuv422_in_a_bag_is_labelled_as_such(tmp_path):
    _raw_bag(str(tmp_path / 'b'), [('rgb8', 16, 48, GOOD_16), ('yuv422', 15, 30, np.zeros(16 * 30)),
                                   ('uyvy', 16, 32, np.zeros(16 * 32))])
    src = BagSource(str(tmp_path / 'b'))
    assert len(list(src.frames())) == 2
    assert src.skips.as_dict() == {'odd width yuv422': 1}


def test_undeserialisable_pose_message_is_one_source_error(tmp_path):
    _raw_bag(str(tmp_path / 'b'), [('rgb8', 16, 48, GOOD_16)], pose_raw=b'\x00\x07\x00\x00garbage')
    with pytest.raises(SourceError, match='cannot read bag') as err:
        list(BagSource(str(tmp_path / 'b')).frames())
    assert '\n' not in str(err.value)


def test_cli_prints_one_line_for_a_corrupt_bag(tmp_path, capsys):
    from vpr_ros.cli import main

    _raw_bag(str(tmp_path / 'b'), [('rgb8', 16, 48, GOOD_16)], pose_raw=b'\x00\x07\x00\x00garbage')
    assert main(['build-map', '--source', str(tmp_path / 'b'), '--out', str(tmp_path / 'm'),
                 '--encoder', 'raw_pixels']) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
    assert len(errors) == 1 and 'cannot read bag' in errors[0] and 'Traceback' not in errors[0]


def test_pose_frames_of_odometry_and_pose_stamped(tmp_path) -> None:
    frames = textured_frames(2, size=(16, 16))
    write_bag(str(tmp_path / 'odom'), frames, map_frame='world')
    assert BagSource(str(tmp_path / 'odom')).pose_frames() == ('world', 'base_link')
    write_bag(str(tmp_path / 'nopose'), frames, poses=[])
    assert BagSource(str(tmp_path / 'nopose')).pose_frames() == ('', '')


def _lie_about_count(bag: str, topic: str, count: int) -> None:
    """Edit the bag's metadata.yaml so ``topic`` claims ``count`` messages."""
    import os

    import yaml

    path = os.path.join(bag, 'metadata.yaml')
    meta = yaml.safe_load(open(path))
    for entry in meta['rosbag2_bagfile_information']['topics_with_message_count']:
        if entry['topic_metadata']['name'] == topic:
            entry['message_count'] = count
    open(path, 'w').write(yaml.safe_dump(meta))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('claimed', [0, 2, 10 ** 12])
def test_metadata_counts_are_never_trusted(tmp_path, storage, claimed):
    """A count of 0 read as 'no messages', one too small stopped early, one of 10^12 sized allocations:
    every frame is read whatever the header says."""
    write_bag(str(tmp_path / 'b'), textured_frames(5), storage=storage)
    _lie_about_count(str(tmp_path / 'b'), '/camera/image_raw', claimed)
    src = BagSource(str(tmp_path / 'b'))
    assert src.image_count <= 1 << 40
    assert len(list(src.frames())) == 5


def test_an_image_topic_without_messages_is_still_named(tmp_path):
    write_bag(str(tmp_path / 'b'), textured_frames(3), pose_topic='/odom')
    import sqlite3

    db = next((tmp_path / 'b').glob('*.db3'))
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM messages WHERE topic_id = (SELECT id FROM topics WHERE name = "
                     "'/camera/image_raw')")
    with pytest.raises(SourceError, match='topic /camera/image_raw has no messages'):
        list(BagSource(str(tmp_path / 'b')).frames(require_pose=False))


def test_non_finite_poses_are_counted_skips_and_a_zero_quaternion_is_position_only(tmp_path):
    frames = textured_frames(4)
    odom = [(f.stamp, f.pose) for f in frames]
    odom.insert(1, (frames[0].stamp + 0.5, Pose((float('inf'), 0.0, 0.0))))
    odom.insert(3, (frames[1].stamp + 0.5, Pose((45.0, 0.0, 0.0), (0.0, 0.0, float('nan'), 1.0))))
    odom[-1] = (frames[3].stamp, Pose(frames[3].pose.position, (0.0, 0.0, 0.0, 0.0)))
    write_bag(str(tmp_path / 'b'), frames, poses=odom)
    src = BagSource(str(tmp_path / 'b'))
    got = list(src.frames())
    assert len(got) == 4 and src.skips.as_dict() == {'non-finite pose': 2}
    assert [f.pose.position[0] for f in got] == [0.0, 30.0, 60.0, 90.0]
    assert got[3].pose.orientation is None and np.isnan(got[3].pose.yaw)
    assert got[0].pose.orientation == (0.0, 0.0, 0.0, 1.0)


def test_pose_track_interpolation_next_to_a_position_only_pose_has_no_orientation():
    track = PoseTrack([0.0, 1.0], [Pose((0.0, 0.0, 0.0)), Pose((2.0, 0.0, 0.0), None)])
    mid = track.at(0.5)
    assert mid.position == (1.0, 0.0, 0.0) and mid.orientation is None
    assert track.at(0.0).orientation == (0.0, 0.0, 0.0, 1.0)

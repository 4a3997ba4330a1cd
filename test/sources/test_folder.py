import cv2
import numpy as np
import pytest

from vpr_ros.errors import SourceError
from vpr_ros.sources.folder import FolderSource


def write_folder(tmp_path, rows, header='image,x,y,yaw,stamp'):
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name), np.full((20, 20, 3), 100, np.uint8))
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    (tmp_path / 'poses.csv').write_text(header + '\n' + '\n'.join(rows) + '\n')


def test_reads_images_and_counts_broken_ones(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0.5,10', 'broken.jpg,3,4,0,11', 'b.png,5,6,0,12', 'gone.png,0,0,0,13'])
    src = FolderSource(str(tmp_path))
    frames = list(src.frames())
    assert [f.source for f in frames] == ['a.png', 'b.png']
    assert frames[0].pose.yaw == pytest.approx(0.5) and frames[1].stamp == 12.0
    assert src.skips.as_dict() == {'undecodable image file': 1, 'unreadable image file': 1}


def test_bad_row_names_the_line(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0,10', 'b.png,x,2,0,11'])
    with pytest.raises(SourceError, match='poses.csv:3'):
        FolderSource(str(tmp_path))


def test_header_needs_columns(tmp_path):
    write_folder(tmp_path, ['a.png,1'], header='image,x')
    with pytest.raises(SourceError, match='header needs'):
        FolderSource(str(tmp_path))


def test_quaternion_columns(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0,0,0.7071068,0.7071068'], header='image,x,y,qx,qy,qz,qw')
    frame = next(FolderSource(str(tmp_path)).frames())
    assert frame.pose.yaw == pytest.approx(np.pi / 2, abs=1e-5)


def test_non_finite_rows_are_counted_skips_and_zero_quaternions_position_only(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0,0,0,1', 'b.png,nan,2,0,0,0,1', 'a.png,inf,2,0,0,0,1',
                            'b.png,5,6,0,0,0,0'],
                 header='image,x,y,qx,qy,qz,qw')
    src = FolderSource(str(tmp_path))
    frames = list(src.frames())
    assert [f.pose.position[0] for f in frames] == [1.0, 5.0]
    assert frames[0].pose.orientation == (0.0, 0.0, 0.0, 1.0) and frames[1].pose.orientation is None
    assert src.skips.as_dict() == {'non-finite pose': 2}


def test_a_csv_that_is_not_utf8_is_one_error(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0,10'])
    (tmp_path / 'poses.csv').write_bytes(b'image,x,y,yaw,stamp\n# caf\xe9\na.png,1,2,0,10\n')
    with pytest.raises(SourceError, match=r'poses.csv is not UTF-8 text \(byte 0xe9 on line 2'):
        FolderSource(str(tmp_path))


def test_a_csv_field_beyond_the_csv_limit_is_one_error(tmp_path):
    write_folder(tmp_path, ['a.png,1,2,0,10', 'b.png,' + 'x' * 200_000 + ',2,0,11'])
    with pytest.raises(SourceError, match='poses.csv:3: not a CSV row'):
        FolderSource(str(tmp_path))


def test_an_image_that_is_a_fifo_is_a_counted_skip_not_a_hang(tmp_path):
    import os

    write_folder(tmp_path, ['a.png,1,2,0,10', 'pipe.png,3,4,0,11'])
    os.mkfifo(tmp_path / 'pipe.png')  # np.fromfile / cv2.imread on it blocked forever
    src = FolderSource(str(tmp_path))
    assert [f.source for f in src.frames()] == ['a.png']
    assert src.skips.as_dict() == {'unreadable image file': 1}

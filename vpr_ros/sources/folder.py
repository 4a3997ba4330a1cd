"""An image folder plus a CSV of poses.

CSV header (comma-separated, one row per image): ``image`` (file name relative to the folder;
``filename``/``file`` also accepted), ``x``, ``y``; optional ``z``, ``stamp`` (seconds;
``timestamp``/``time`` also accepted; default: row index), and either ``yaw`` (radians) or
``qx,qy,qz,qw`` (all zero: a position-only pose). Unreadable images and rows with a NaN or infinite
number are counted skips; malformed rows are errors naming the line.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator

from vpr_ros.errors import ImageDecodeError, SourceError
from vpr_ros.frames import DEFAULT_MAX_IMAGE_PIXELS, Frame, NonFinitePose, Pose, read_image_file
from vpr_ros.skips import SkipCounter
from vpr_ros.textio import read_text, short_repr

MAX_CSV_BYTES = 1 << 30

_IMAGE_COLS = ('image', 'filename', 'file')
_STAMP_COLS = ('stamp', 'timestamp', 'time')


def _records(reader: csv.DictReader, path: str) -> Iterator[dict[str, str]]:
    try:
        yield from reader
    except csv.Error as exc:  # e.g. a field beyond csv.field_size_limit
        raise SourceError(f'{path}:{reader.line_num + 1}: not a CSV row ({str(exc)[:120]})') from exc


class FolderSource:
    def __init__(self, folder: str, poses_csv: str | None = None, skips: SkipCounter | None = None,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if not os.path.isdir(folder):
            raise SourceError(f'image folder not found: {folder}')
        self.folder = folder
        self.csv_path = poses_csv or os.path.join(folder, 'poses.csv')
        if not os.path.isfile(self.csv_path):
            raise SourceError(f'poses CSV not found: {self.csv_path} (give --poses CSV)')
        self.skips = skips or SkipCounter()
        self.max_pixels = max_pixels
        self.rows = self._read_rows()
        if not self.rows:
            raise SourceError(f'{self.csv_path} lists no images')
        self.image_count = len(self.rows)

    def _read_rows(self) -> list[tuple[str, float, Pose]]:
        text = read_text(self.csv_path, 'poses CSV', SourceError, MAX_CSV_BYTES)
        reader = csv.DictReader(io.StringIO(text, newline=''))
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise SourceError(f'{self.csv_path}:1: not a CSV header ({str(exc)[:120]})') from exc
        cols = {c.strip().lower(): c for c in header}
        image_col = next((cols[c] for c in _IMAGE_COLS if c in cols), None)
        if image_col is None or 'x' not in cols or 'y' not in cols:
            raise SourceError(f'{self.csv_path}: header needs image, x, y columns '
                              f'(has {short_repr(list(cols))})')
        stamp_col = next((cols[c] for c in _STAMP_COLS if c in cols), None)
        rows = []
        for line, rec in enumerate(_records(reader, self.csv_path), start=2):
            try:
                x, y = float(rec[cols['x']]), float(rec[cols['y']])
                z = float(rec[cols['z']]) if 'z' in cols and rec[cols['z']] not in ('', None) else 0.0
                stamp = float(rec[stamp_col]) if stamp_col else float(line - 2)
                if all(q in cols for q in ('qx', 'qy', 'qz', 'qw')):
                    q = [float(rec[cols[k]]) for k in ('qx', 'qy', 'qz', 'qw')]
                else:
                    yaw = float(rec[cols['yaw']]) if 'yaw' in cols else 0.0
                    q = [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]
                if not math.isfinite(stamp):
                    raise NonFinitePose(f'stamp {stamp}')
                pose = Pose.from_values((x, y, z), q)  # a zero quaternion: position only
            except NonFinitePose as exc:
                self.skips.skip('non-finite pose', f'{self.csv_path}:{line}: {exc}')
                continue
            except (TypeError, ValueError) as exc:
                raise SourceError(f'{self.csv_path}:{line}: bad row ({str(exc)[:160]})') from exc
            rows.append((rec[image_col], stamp, pose))
        return rows

    def frames(self, require_pose: bool = True) -> Iterator[Frame]:
        for name, stamp, pose in self.rows:
            path = os.path.join(self.folder, name)
            try:
                rgb = read_image_file(path, self.max_pixels)
            except ImageDecodeError as exc:
                self.skips.skip(exc.kind, str(exc))
                continue
            yield Frame(stamp, rgb, pose, source=name)

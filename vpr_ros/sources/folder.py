"""An image folder plus a CSV of poses.

CSV header (comma-separated, one row per image): ``image`` (file name relative to the folder;
``filename``/``file`` also accepted), ``x``, ``y``; optional ``z``, ``stamp`` (seconds;
``timestamp``/``time`` also accepted; default: row index), and either ``yaw`` (radians) or
``qx,qy,qz,qw``. Unreadable images are counted skips; malformed rows are errors naming the line.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator

from vpr_ros.errors import ImageDecodeError, SourceError
from vpr_ros.frames import DEFAULT_MAX_IMAGE_PIXELS, Frame, Pose, read_image_file
from vpr_ros.skips import SkipCounter

_IMAGE_COLS = ('image', 'filename', 'file')
_STAMP_COLS = ('stamp', 'timestamp', 'time')


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
        with open(self.csv_path, newline='', encoding='utf-8') as fh:
            reader = csv.DictReader(fh)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            image_col = next((cols[c] for c in _IMAGE_COLS if c in cols), None)
            if image_col is None or 'x' not in cols or 'y' not in cols:
                raise SourceError(f'{self.csv_path}: header needs image, x, y columns (has {list(cols)})')
            stamp_col = next((cols[c] for c in _STAMP_COLS if c in cols), None)
            rows = []
            for line, rec in enumerate(reader, start=2):
                try:
                    x, y = float(rec[cols['x']]), float(rec[cols['y']])
                    z = float(rec[cols['z']]) if 'z' in cols and rec[cols['z']] not in ('', None) else 0.0
                    stamp = float(rec[stamp_col]) if stamp_col else float(line - 2)
                    if all(q in cols for q in ('qx', 'qy', 'qz', 'qw')):
                        q = tuple(float(rec[cols[k]]) for k in ('qx', 'qy', 'qz', 'qw'))
                        norm = math.sqrt(sum(v * v for v in q))
                        if not norm:
                            raise ValueError('zero quaternion')
                        pose = Pose((x, y, z), tuple(v / norm for v in q))
                    else:
                        yaw = float(rec[cols['yaw']]) if 'yaw' in cols else 0.0
                        pose = Pose.from_xy_yaw(x, y, yaw, z)
                except (TypeError, ValueError) as exc:
                    raise SourceError(f'{self.csv_path}:{line}: bad row ({exc})') from exc
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

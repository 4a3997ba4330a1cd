"""Data sources: rosbag2 bags and image folders with a CSV of poses, opened by :func:`open_source`."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

from vpr_ros.errors import SourceError
from vpr_ros.frames import DEFAULT_MAX_IMAGE_PIXELS, Frame
from vpr_ros.skips import SkipCounter


class Source(Protocol):
    image_count: int  # an estimate for progress bars (a bag's metadata count): never trusted
    skips: SkipCounter

    def frames(self, require_pose: bool = True) -> Iterator[Frame]: ...


def open_source(path: str, image_topic: str | None = None, pose_topic: str | None = None,
                poses_csv: str | None = None, skips: SkipCounter | None = None,
                max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Source:
    """A rosbag2 directory/file (has metadata.yaml, .db3 or .mcap) or an image folder + CSV."""
    from vpr_ros.sources.bag import BagSource
    from vpr_ros.sources.folder import FolderSource

    if not os.path.exists(path):
        raise SourceError(f'not found: {path}')
    if not (os.path.isdir(path) or os.path.isfile(path)):  # a FIFO, a device: never opened
        raise SourceError(f'{path} is neither a folder nor a regular file (a bag or an image folder)')
    is_bag = os.path.isfile(path) or os.path.isfile(os.path.join(path, 'metadata.yaml')) or any(
        n.endswith(('.db3', '.mcap')) for n in os.listdir(path))
    if is_bag and not poses_csv:
        return BagSource(path, image_topic, pose_topic, skips, max_pixels)
    return FolderSource(path, poses_csv, skips, max_pixels)

"""The procedurally rendered sample world: the project's embedded demo data.

A street loop (about 1.2 km at ``scale=1``) is lined with buildings whose facades are painted
procedurally from a seeded RNG: a few shared architectural styles (brick, plaster, glass,
concrete, shops, warehouses, timber) so that places can look alike, but every facade gets its
own colours, window grid, doors, signs with random "lettering", stripes and graffiti, so each
place stays unique. Trees, lamp posts and road signs stand on the pavement; parked cars,
pedestrians and trucks differ per traversal.

Frames are rendered with a 2D ray caster (one ray per image column against the facade line
segments, up to ``LAYERS`` hits per column so taller buildings behind show above nearer ones),
a perspective ground plane sampled from a top-down raster of the road, a sky with clouds and
a distant skyline, and billboard sprites with a depth test; all vectorised (numpy, cv2 remap/blur).

Three traversals are written as ROS 2 bags (``/camera/image_raw`` rgb8 about every
``FRAME_SPACING_M`` metres, i.e. 2 Hz at scale 1; ``/odom`` nav_msgs/Odometry at ``ODOM_HZ``,
offset from the image stamps so poses must be interpolated; ``/clock``):

* ``mapping``: a sunny day, right lane, about 1.2 laps (the overlap is a revisit for loop closure);
* ``query``: an overcast autumn evening (darker, gamma, warm tint, desaturated, noisier,
  blurrier, fog, other sun direction), 1-3 m to the left in the other lane, up to +-7 deg yaw
  wobble, more parked cars, pedestrians and trucks, 1.15 laps starting elsewhere;
* ``viewpoint``: one lap 5-6 m to the left with the camera yawed 28-36 deg to the left,
  so only part of each facade is shared with the mapping views.

Poses are camera poses in the ``map`` frame: position in metres, yaw = optical axis heading.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from vpr_ros.errors import ConfigError, SourceError
from vpr_ros.frames import Frame, Pose
from vpr_ros.sample.constants import LOOP_M, MIN_LOOP_M, STORAGES, TRAVERSALS
from vpr_ros.sample.render import _render_frames, sample_camera
from vpr_ros.sample.traversals import _plan
from vpr_ros.sample.world import _world

__all__ = ['LOOP_M', 'MIN_LOOP_M', 'TRAVERSALS', 'SampleInfo', 'generate_sample', 'render_traversal',
           'sample_camera']


@dataclass
class SampleInfo:
    """What ``generate_sample`` wrote: bag path and image count per traversal, lap length."""

    out_dir: str
    bags: dict[str, str]
    frames: dict[str, int]
    route_length_m: float
    storage: str


def generate_sample(out_dir: str, *, seed: int = 0, storage: str = 'sqlite3', compressed: bool = False,
                    image_size: tuple[int, int] = (240, 320), traversals: Sequence[str] = TRAVERSALS,
                    scale: float = 1.0, progress: bool = True) -> SampleInfo:
    """Render the traversals and write each as the bag ``out_dir/<traversal>``.

    Refuses (SourceError) before rendering anything if one of the bags already exists.
    """
    from tqdm import tqdm

    from vpr_ros.sources.bag import write_bag

    if storage not in STORAGES:
        raise SourceError(f'unknown bag storage {storage!r} ({" or ".join(STORAGES)})')
    names = list(dict.fromkeys(traversals))
    for name in names:
        _check_args(name, image_size, scale)
    bags = {name: os.path.join(out_dir, name) for name in names}
    existing = [p for p in bags.values() if os.path.exists(p)]
    if existing:
        raise SourceError(f'{", ".join(existing)} already exist(s); refusing to overwrite sample bags '
                          '(remove them or choose another output directory)')
    os.makedirs(out_dir, exist_ok=True)
    counts: dict[str, int] = {}
    length = _world(int(seed), float(scale)).route.length
    for name in names:
        plan = _plan(name, seed, scale)
        frames = tqdm(_render_frames(plan, image_size), total=len(plan.image_stamps),
                      desc=f'sample {name}', unit='frame', disable=not progress, leave=False)
        counts[name] = write_bag(bags[name], frames, storage=storage, compressed=compressed,
                                 poses=plan.odometry())
    return SampleInfo(out_dir=out_dir, bags=bags, frames=counts, route_length_m=length, storage=storage)


def render_traversal(name: str, *, seed: int = 0, image_size: tuple[int, int] = (240, 320),
                     scale: float = 1.0) -> tuple[list[Frame], list[tuple[float, Pose]]]:
    """Render one traversal: frames with their ground-truth pose, and the odometry stream."""
    _check_args(name, image_size, scale)
    plan = _plan(name, seed, scale)
    return list(_render_frames(plan, image_size)), plan.odometry()


def _check_args(name: str, image_size: Sequence[int], scale: float) -> None:
    if name not in TRAVERSALS:
        raise ConfigError(f'unknown sample traversal {name!r}; known: {", ".join(TRAVERSALS)}')
    if len(image_size) != 2 or min(int(v) for v in image_size) < 16:
        raise ConfigError(f'sample image_size must be (height, width), each >= 16; got {tuple(image_size)}')
    if not scale > 0:
        raise ConfigError(f'sample scale must be > 0; got {scale}')

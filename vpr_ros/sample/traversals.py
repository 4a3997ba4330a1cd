"""The traversals: their conditions and plans, and the public API that renders and writes them."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vpr_ros.frames import Pose
from vpr_ros.sample.constants import (
    CRUISE_MPS,
    FRAME_SPACING_M,
    GROUND_RES_M,
    MAPPING_LANE_M,
    MIN_LAP_S,
    ODOM_HZ,
    ODOM_OFFSET_S,
    PITCH_DEG,
    ROAD_HALF_M,
    SPRITE_PPM,
    TRAVERSALS,
)
from vpr_ros.sample.sprites import _car, _lamp, _pedestrian, _road_sign, _tree, _truck
from vpr_ros.sample.textures import _smooth
from vpr_ros.sample.world import World, _world, _world_rng


@dataclass(frozen=True)
class Condition:
    """Scene lighting/weather and camera response of one traversal."""

    sun_azimuth: float
    sun_elevation: float
    sun: float
    ambient: float
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    cloudiness: float
    fog_m: float
    autumn: bool
    exposure: float
    exposure_var: float
    gamma: float
    tint: tuple[float, float, float]
    saturation: float
    contrast: float
    noise: float
    blur: float
    motion_blur_p: float
    vignette: float
    cars_per_100m: float
    pedestrians_per_100m: float
    trucks_per_km: float
    cars_left: bool = True


_CONDITIONS = {
    'mapping': Condition(sun_azimuth=0.8, sun_elevation=0.75, sun=0.55, ambient=0.62,
                         zenith=(0.32, 0.5, 0.85), horizon=(0.75, 0.84, 0.95), cloudiness=0.25, fog_m=450.0,
                         autumn=False, exposure=1.0, exposure_var=0.03, gamma=1.0, tint=(1.0, 1.0, 1.0),
                         saturation=1.0, contrast=1.0, noise=1.5, blur=0.5, motion_blur_p=0.0, vignette=0.1,
                         cars_per_100m=2.0, pedestrians_per_100m=0.8, trucks_per_km=1.0),
    'query': Condition(sun_azimuth=3.9, sun_elevation=0.2, sun=0.3, ambient=0.58,
                       zenith=(0.45, 0.47, 0.52), horizon=(0.78, 0.72, 0.66), cloudiness=0.75, fog_m=300.0,
                       autumn=True, exposure=0.85, exposure_var=0.1, gamma=1.1, tint=(1.06, 1.0, 0.88),
                       saturation=0.75, contrast=0.92, noise=2.0, blur=0.6, motion_blur_p=0.1, vignette=0.2,
                       cars_per_100m=4.0, pedestrians_per_100m=4.0, trucks_per_km=8.0),
    'viewpoint': Condition(sun_azimuth=2.3, sun_elevation=0.45, sun=0.45, ambient=0.6,
                           zenith=(0.36, 0.52, 0.82), horizon=(0.78, 0.84, 0.92), cloudiness=0.45,
                           fog_m=350.0, autumn=False, exposure=1.08, exposure_var=0.05, gamma=1.05,
                           tint=(0.95, 1.0, 1.07), saturation=0.9, contrast=1.0, noise=3.0, blur=0.7,
                           motion_blur_p=0.1, vignette=0.15, cars_per_100m=2.5, pedestrians_per_100m=1.5,
                           trucks_per_km=2.0, cars_left=False),
}
# start (fraction of a lap), laps, stamp of the first message, lane offset range relative to the
# mapping lane (m), yaw offset (deg) and its wobble (deg), pitch wobble (deg)
_DRIVES = {
    'mapping': (0.0, 1.2, 1000.0, (0.0, 0.0), 0.0, 1.0, 0.3),
    'query': (0.3, 1.15, 5000.0, (1.0, 3.0), 0.0, 7.0, 1.0),
    'viewpoint': (0.55, 1.0, 9000.0, (5.0, 6.0), 32.0, 4.0, 0.5),
}


@dataclass
class _Plan:
    """A traversal: world, condition, trajectory and the dynamic objects seen on it."""

    name: str
    world: World
    cond: Condition
    seed: int
    t0: float
    t_end: float
    image_stamps: np.ndarray
    pose_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    sprites: np.ndarray              # (N, 4): x, y, width, height
    sprite_tex: list[np.ndarray]     # RGBA per sprite

    def odometry(self) -> list[tuple[float, Pose]]:
        stamps = np.arange(self.t0 + ODOM_OFFSET_S, self.t_end, 1.0 / ODOM_HZ)
        x, y, yaw, _ = self.pose_fn(stamps)
        return [(float(t), Pose.from_xy_yaw(a, b, c)) for t, a, b, c in zip(stamps, x, y, yaw)]


def _plan(name: str, seed: int, scale: float) -> _Plan:
    world = _world(int(seed), float(scale))
    route = world.route
    cond = _CONDITIONS[name]
    start, laps, t0, lane_rng, yaw_off, yaw_wobble, pitch_wobble = _DRIVES[name]
    rng = _world_rng(seed, 1 + TRAVERSALS.index(name))
    cruise = min(CRUISE_MPS, route.length / MIN_LAP_S)

    s0 = start * route.length
    s_grid = s0 + np.arange(0.0, laps * route.length + route.step, route.step)
    speed_var = _smooth(rng, (60.0, 250.0))
    curv = np.interp(s_grid % route.length, np.arange(len(route.curvature)) * route.step, route.curvature)
    speed = cruise * (1 + 0.15 * speed_var(s_grid)) * (1 - 0.4 * np.clip(curv * 12.0, 0, 1))
    t_grid = t0 + np.concatenate([[0.0], np.cumsum(np.diff(s_grid) / speed[:-1])])
    lane_fn = _smooth(rng, (80.0, 300.0))
    yaw_fn = _smooth(rng, (4.0, 15.0))
    pitch_fn = _smooth(rng, (1.5, 6.0))
    lane_lo, lane_hi = lane_rng

    def pose_fn(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = np.interp(t, t_grid, s_grid)
        lanes = []
        for ds in (0.0, 1.0):  # the heading follows lane changes too
            lanes.append(MAPPING_LANE_M + lane_lo + (lane_hi - lane_lo) * 0.5 * (1 + lane_fn(s + ds)))
        xy, tang, n = route.at(s)
        pos = xy + lanes[0][..., None] * n
        heading = np.arctan2(tang[..., 1], tang[..., 0]) + np.arctan(lanes[1] - lanes[0])
        yaw = heading + np.radians(yaw_off + yaw_wobble * yaw_fn(t))
        yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
        return pos[..., 0], pos[..., 1], yaw, np.radians(PITCH_DEG + pitch_wobble * pitch_fn(t))

    t_end = float(t_grid[-1])
    period = FRAME_SPACING_M / cruise
    stamps = t0 + 0.3 + period * np.arange(int((t_end - t0 - 0.6) / period) + 1)
    stamps += rng.uniform(-0.004, 0.004, len(stamps))  # camera trigger jitter
    sprites, tex = _scene_sprites(world, cond, rng)
    return _Plan(name=name, world=world, cond=cond, seed=int(seed), t0=t0, t_end=t_end, image_stamps=stamps,
                 pose_fn=pose_fn, sprites=sprites, sprite_tex=tex)


def _scene_sprites(world: World, cond: Condition,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Street furniture (trees in this season) plus this traversal's cars, pedestrians and trucks."""
    route = world.route
    fr = np.random.default_rng(world.tree_seeds[0])  # furniture looks the same in every traversal
    library = {'tree': [_tree(s, cond.autumn) for s in world.tree_seeds], 'lamp': [_lamp(fr)],
               'sign': [_road_sign(fr) for _ in range(8)]}
    rows: list[tuple[float, float, float, float]] = []
    tex: list[np.ndarray] = []

    def add(x: float, y: float, rgba: np.ndarray) -> None:
        rows.append((x, y, rgba.shape[1] / SPRITE_PPM, rgba.shape[0] / SPRITE_PPM))
        tex.append(rgba)

    for x, y, kind, variant in world.furniture:
        add(x, y, library[kind][variant])
    cars = [_car(rng) for _ in range(10)]
    people = [_pedestrian(rng) for _ in range(10)]
    trucks = [_truck(rng) for _ in range(4)]
    kerb = ROAD_HALF_M
    for per_m, lib, lateral in ((cond.cars_per_100m / 100, cars, (kerb - 0.9, kerb - 0.6)),
                                (cond.pedestrians_per_100m / 100, people, (kerb + 0.8, kerb + 4.0)),
                                (cond.trucks_per_km / 1000, trucks, (kerb - 1.1, kerb - 0.9))):
        for s in rng.uniform(0, route.length, rng.poisson(per_m * route.length * 2)):
            side = 1.0 if rng.random() < 0.5 else -1.0
            if lib is not people and side > 0 and not cond.cars_left:
                side = -1.0
            xy, _, n = route.at(s)
            p = xy + side * rng.uniform(*lateral) * n
            r, c = ((p - world.ground_origin) / GROUND_RES_M).astype(int)[::-1]
            if not world.occupied[r, c]:
                add(float(p[0]), float(p[1]), lib[int(rng.integers(len(lib)))])
    return np.array(rows, np.float32).reshape(-1, 4), tex

"""Rendering: a 2D ray caster for facades, a perspective ground plane, sky and depth-tested sprites."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from vpr_ros.features import CameraIntrinsics
from vpr_ros.frames import Frame, Pose
from vpr_ros.sample.constants import (
    CAMERA_HEIGHT_M,
    GROUND_LEVELS,
    GROUND_RES_M,
    HFOV_DEG,
    LAYERS,
    MAX_RANGE_M,
    MIP_LEVELS,
    PITCH_DEG,
    PPM,
    TRAVERSALS,
)
from vpr_ros.sample.textures import _noise, _smooth
from vpr_ros.sample.traversals import Condition, _Plan
from vpr_ros.sample.world import _world_rng


def sample_camera(image_size: tuple[int, int] = (240, 320)) -> CameraIntrinsics:
    """The pinhole the renderer projects with (``image_size`` = (height, width)): HFOV_DEG horizontal field
    of view, square pixels, the optical axis level with the ground. The renderer draws the camera's pitch as
    a shift of the horizon row, i.e. of the principal point: cy = (h - 1) / 2 + f tan(PITCH_DEG). A
    traversal's pitch wobble (0.3-1 deg) is not in it."""
    h, w = int(image_size[0]), int(image_size[1])
    f = (w / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    cy = (h - 1) / 2 + f * math.tan(math.radians(PITCH_DEG))
    return CameraIntrinsics((f, 0.0, (w - 1) / 2, 0.0, f, cy, 0.0, 0.0, 1.0), (), 'plumb_bob', w, h)


class _Renderer:
    """Renders linear-light RGB float32 images of one plan at one image size."""

    def __init__(self, plan: _Plan, size: tuple[int, int]) -> None:
        self.plan, self.world, self.cond = plan, plan.world, plan.cond
        self.h, self.w = int(size[0]), int(size[1])
        self.f = (self.w / 2) / math.tan(math.radians(HFOV_DEG) / 2)
        self.cx = (self.w - 1) / 2
        self.xs = ((self.cx - np.arange(self.w)) / self.f).astype(np.float32)  # + is left
        self.rows = np.arange(self.h, dtype=np.float32)[:, None]
        c = self.cond
        sun = np.array([math.cos(c.sun_azimuth), math.sin(c.sun_azimuth)], np.float32)
        lambert = np.clip(self.world.seg_n @ sun, 0, None) * math.cos(c.sun_elevation)
        self.seg_shade = (c.ambient + c.sun * 1.3 * lambert).astype(np.float32)
        self.ground_shade = c.ambient + c.sun * math.sin(c.sun_elevation) * 1.1
        crng = _world_rng(plan.seed, 10 + TRAVERSALS.index(plan.name))
        clouds = _noise(crng, 96, 2048 + 64, 24.0) * 0.6 + _noise(crng, 96, 2048 + 64, 6.0) * 0.4
        clouds = clouds[:, :2048]
        self.clouds = np.clip((clouds - (1 - c.cloudiness)) * 3.0, 0, 1).astype(np.float32)
        self.zenith = np.array(c.zenith, np.float32)
        self.horizon = np.array(c.horizon, np.float32)
        self.fog = self.horizon * 0.9
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        r2 = ((xx - self.cx) / (self.w / 2)) ** 2 + ((yy - (self.h - 1) / 2) / (self.h / 2)) ** 2
        self.vignette = (1 - c.vignette * 0.5 * r2).astype(np.float32)[..., None]

    def render(self, x: float, y: float, yaw: float, pitch: float) -> np.ndarray:
        w, h, f = self.w, self.h, self.f
        world = self.world
        cam = np.array([x, y], np.float32)
        fwd = np.array([math.cos(yaw), math.sin(yaw)], np.float32)
        left = np.array([-math.sin(yaw), math.cos(yaw)], np.float32)
        hz = (h - 1) / 2 + f * math.tan(pitch)  # horizon row
        dirs = fwd[None, :] + self.xs[:, None] * left[None, :]  # forward component 1: ray t == depth

        rel = world.seg_a - cam
        dist = np.linalg.norm(world.seg_mid - cam, axis=1) - world.seg_len / 2
        keep = np.flatnonzero(((rel * world.seg_n).sum(1) < 0) & (dist < MAX_RANGE_M))
        img = np.empty((h, w, 3), np.float32)
        depth = np.full((h, w), np.inf, np.float32)
        layer = np.full((h, w), -1, np.int64)
        z0 = np.full(w, np.inf, np.float32)
        if len(keep):
            e, r = world.seg_e[keep], rel[keep]
            denom = dirs[:, 0:1] * e[None, :, 1] - dirs[:, 1:2] * e[None, :, 0]
            with np.errstate(divide='ignore', invalid='ignore'):
                t = (r[:, 0] * e[:, 1] - r[:, 1] * e[:, 0])[None, :] / denom
                u = (r[None, :, 0] * dirs[:, 1:2] - r[None, :, 1] * dirs[:, 0:1]) / denom
            t = np.where((t > 0.3) & (u >= 0) & (u <= 1), t, np.inf)
            k = min(LAYERS, len(keep))
            near = (np.argpartition(t, k - 1, axis=1)[:, :k] if len(keep) > k
                    else np.tile(np.arange(k), (w, 1)))
            tz = np.take_along_axis(t, near, 1)
            order = np.argsort(tz, axis=1)
            near, tz = np.take_along_axis(near, order, 1), np.take_along_axis(tz, order, 1)
            uu = np.take_along_axis(u, near, 1)
            sid = keep[near]  # (w, k) segment ids
            hit = np.isfinite(tz)
            zk = np.where(hit, tz, 1.0).astype(np.float32)
            hb = world.seg_h[sid]
            top = np.where(hit, hz - f * (hb - CAMERA_HEIGHT_M) / zk, np.inf).astype(np.float32)
            z0 = np.where(hit[:, 0], tz[:, 0], np.inf).astype(np.float32)
            # visible layer per pixel: the nearest one whose roof line is above the pixel
            for kk in range(k - 1, -1, -1):
                layer[self.rows >= top[None, :, kk]] = kk
            # texture addressing per (column, layer); the texel row is linear in the image row
            level = np.clip(np.floor(np.log2(np.maximum(PPM * zk / f, 1.0))), 0, MIP_LEVELS - 1)
            level = level.astype(np.int64)
            tex = world.seg_tex[sid]
            ppl = (PPM / 2.0 ** level).astype(np.float32)
            tw, th = world.atlas.width[tex, level], world.atlas.height[tex, level]
            ucol = ((world.seg_u0[sid] + uu * world.seg_len[sid]) * ppl).astype(np.int64) % tw
            base = world.atlas.offset[tex, level] + ucol
            va = (hb - CAMERA_HEIGHT_M - hz * zk / f) * ppl
            vb = zk / f * ppl
            shade = self.seg_shade[sid]
        bottom = hz + f * CAMERA_HEIGHT_M / z0  # where the nearest wall meets the ground
        ground = self.rows > np.maximum(bottom, hz)[None, :]
        layer[ground] = -2

        wall = layer >= 0
        if wall.any():
            rr, cc = np.nonzero(wall)
            kk = layer[rr, cc]
            v = np.clip((va[cc, kk] + rr * vb[cc, kk]).astype(np.int64), 0, th[cc, kk] - 1)
            col = world.atlas.flat[base[cc, kk] + v * tw[cc, kk]].astype(np.float32)
            z = zk[cc, kk]
            height = CAMERA_HEIGHT_M + (hz - rr) * z / f
            ao = np.clip(0.72 + 0.28 * height / 1.5, 0.72, 1.0) * (1 / 255)
            img[rr, cc] = col * (shade[cc, kk] * ao)[:, None]
            depth[rr, cc] = z
        self._ground(img, depth, ground, cam, fwd, left, hz)
        self._sky(img, layer == -1, yaw, hz)
        self._sprites(img, depth, cam, fwd, left, hz)
        fog = 1 - np.exp(-np.minimum(depth, 1e4) / self.cond.fog_m)
        img += (self.fog - img) * fog[..., None]
        return img

    def _ground(self, img: np.ndarray, depth: np.ndarray, ground: np.ndarray, cam: np.ndarray,
                fwd: np.ndarray, left: np.ndarray, hz: float) -> None:
        first = max(int(np.floor(hz)) + 1, 0)
        if first >= self.h:
            return
        rows = np.arange(first, self.h)
        z_row = (self.f * CAMERA_HEIGHT_M / np.maximum(rows - hz, 1e-3)).astype(np.float32)
        # footprint of a pixel on the ground: z/f across, z^2/(f h) along the view
        foot = np.sqrt(z_row / self.f * z_row ** 2 / (self.f * CAMERA_HEIGHT_M))
        lvl = np.clip(np.floor(np.log2(np.maximum(foot / GROUND_RES_M, 1.0)) - 0.5), 0, GROUND_LEVELS - 1)
        lvl = lvl.astype(np.int64)
        origin = self.world.ground_origin
        for level in np.unique(lvl):
            band = rows[lvl == level]
            m = ground[band]
            if not m.any():
                continue
            z = z_row[band - first][:, None]
            lat = z * self.xs[None, :]
            res = GROUND_RES_M * 2 ** level
            mx = ((cam[0] - origin[0] + z * fwd[0] + lat * left[0]) / res - 0.5).astype(np.float32)
            my = ((cam[1] - origin[1] + z * fwd[1] + lat * left[1]) / res - 0.5).astype(np.float32)
            # bilinear where the texture is magnified near the camera, or the kerbs look jagged
            interp = cv2.INTER_LINEAR if level == 0 else cv2.INTER_NEAREST
            col = cv2.remap(self.world.ground[level], mx, my, interp, borderMode=cv2.BORDER_REPLICATE)
            img[band[0]:band[-1] + 1][m] = col[m] * np.float32(self.ground_shade / 255)
            depth[band[0]:band[-1] + 1][m] = np.broadcast_to(z, m.shape)[m]

    def _sky(self, img: np.ndarray, sky: np.ndarray, yaw: float, hz: float) -> None:
        if not sky.any():
            return
        rr, cc = np.nonzero(sky)
        elev = np.arctan((hz - rr) / self.f).astype(np.float32)
        az = (yaw + np.arctan(self.xs)) % (2 * math.pi)
        a = np.clip(elev / 0.9, 0, 1) ** 0.6
        col = self.horizon + (self.zenith - self.horizon) * a[:, None]
        n_el, n_az = self.clouds.shape
        ai = (az[cc] / (2 * math.pi) * n_az).astype(np.int64) % n_az
        ei = np.clip((elev / (math.pi / 2) * n_el * 1.5).astype(np.int64), 0, n_el - 1)
        cloud = self.clouds[ei, ai] * np.clip(elev * 20, 0, 1)
        grey = 0.95 - 0.35 * self.cond.cloudiness
        col += (np.float32(grey) - col) * cloud[:, None]
        n_sky = self.world.skyline.shape[0]
        sky_i = (n_sky * az / (2 * math.pi)).astype(np.int64) % n_sky
        city = elev < self.world.skyline[sky_i][cc]
        col[city] = self.horizon * 0.78 + np.float32(0.04) * (ai[city] % 7 == 0)[:, None]
        img[rr, cc] = col

    def _sprites(self, img: np.ndarray, depth: np.ndarray, cam: np.ndarray, fwd: np.ndarray,
                 left: np.ndarray, hz: float) -> None:
        sp = self.plan.sprites
        if not len(sp):
            return
        rel = sp[:, :2] - cam
        z = rel @ fwd
        lat = rel @ left
        f = self.f
        cx = self.cx - f * lat / np.maximum(z, 1e-3)
        half = f * sp[:, 2] / 2 / np.maximum(z, 1e-3)
        ok = (z > 1.5) & (z < 90) & (cx + half > 0) & (cx - half < self.w)
        for i in np.flatnonzero(ok)[np.argsort(-z[ok])]:
            zi = float(z[i])
            c0, c1 = cx[i] - half[i], cx[i] + half[i]
            r1 = hz + f * CAMERA_HEIGHT_M / zi
            r0 = r1 - f * sp[i, 3] / zi
            ca, cb = max(0, int(math.ceil(c0))), min(self.w, int(math.ceil(c1)))
            ra, rb = max(0, int(math.ceil(r0))), min(self.h, int(math.ceil(r1)))
            if ca >= cb or ra >= rb:
                continue
            tex = self.plan.sprite_tex[i]
            th, tw = tex.shape[:2]
            ui = np.clip(((np.arange(ca, cb) - c0) / (c1 - c0) * tw).astype(np.int64), 0, tw - 1)
            vi = np.clip(((np.arange(ra, rb) - r0) / (r1 - r0) * th).astype(np.int64), 0, th - 1)
            patch = tex[vi[:, None], ui[None, :]]
            m = (patch[..., 3] > 0.5) & (depth[ra:rb, ca:cb] > zi)
            img[ra:rb, ca:cb][m] = patch[..., :3][m] * self.ground_shade
            depth[ra:rb, ca:cb][m] = zi


def _develop(img: np.ndarray, cond: Condition, rng: np.random.Generator, exposure: float,
             vignette: np.ndarray) -> np.ndarray:
    """Camera response: exposure, tint, saturation, contrast, gamma, vignette, blur, noise -> uint8."""
    img *= np.float32(exposure) * np.asarray(cond.tint, np.float32)
    if cond.saturation != 1.0:
        grey = img.mean(2, keepdims=True)
        img = grey + (img - grey) * np.float32(cond.saturation)
    if cond.contrast != 1.0:
        img = 0.5 + (img - 0.5) * np.float32(cond.contrast)
    np.clip(img, 0, 1, out=img)
    if cond.gamma != 1.0:
        img = cv2.pow(img, cond.gamma)
    img *= vignette
    if cond.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), cond.blur)
    if rng.random() < cond.motion_blur_p:
        n = int(rng.integers(3, 8))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1.0 / n
        img = cv2.filter2D(img, -1, cv2.warpAffine(kernel, cv2.getRotationMatrix2D(
            ((n - 1) / 2, (n - 1) / 2), float(rng.uniform(-20, 20)), 1.0), (n, n)) * 1.0)
    out = img * 255.0 + 0.5
    if cond.noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(cond.noise)
    return np.clip(out, 0, 255).astype(np.uint8)


def _render_frames(plan: _Plan, image_size: Sequence[int]) -> Iterator[Frame]:
    renderer = _Renderer(plan, (int(image_size[0]), int(image_size[1])))
    x, y, yaw, pitch = plan.pose_fn(plan.image_stamps)
    rng = _world_rng(plan.seed, 20 + TRAVERSALS.index(plan.name))
    expo_fn = _smooth(rng, (10.0, 40.0))
    for i, stamp in enumerate(plan.image_stamps):
        img = renderer.render(float(x[i]), float(y[i]), float(yaw[i]), float(pitch[i]))
        exposure = plan.cond.exposure * (1 + plan.cond.exposure_var * float(expo_fn(stamp)))
        rgb = _develop(img, plan.cond, rng, exposure, renderer.vignette)
        yield Frame(float(stamp), rgb, Pose.from_xy_yaw(x[i], y[i], yaw[i]), source=f'sample:{plan.name}',
                    meta={'traversal': plan.name, 'index': i})

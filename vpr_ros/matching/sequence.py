"""Sequence matching (SeqSLAM, Milford & Wyeth, ICRA 2012): match the last ``length`` query frames
as a trajectory through the map instead of one frame at a time.

1. **Difference matrix**: ``D = -similarity`` of each query frame to every map place (cosine for
   global maps, the per-place vote of multi-vector maps). Any positive affine change of a
   frame's similarities leaves step 2 unchanged, so the two kinds of score are treated alike.
2. **Contrast normalisation**, per query frame: each place's difference minus the mean over the
   map places of the normalisation window, divided by their standard deviation, which removes
   the frame-wide offset and scale that appearance change adds to every difference. The default
   window (``contrast_window`` 0) is the whole map: a per-frame affine change that never alters
   a frame's own ranking. ``contrast_window`` R > 0 is OpenSeqSLAM's local contrast enhancement
   over the places within ``R // 2`` (in stamp order). Measured (docs/sequence-matching.md), the local
   window is what made sequences worse than single frames: where a frame's similarity peak is
   wider than R/2 places (neighbouring frames that look alike: dense frames, corridors) the
   local mean swallows the peak, while the local std of a flat stretch is small and turns its
   noise into peaks as high as the true one (a value's z within an 11-place window can reach 3
   whatever its raw similarity). On the sample world the locally normalised frame ranks the true
   place first on 10 % of frames where its raw similarity does on 89 %.
3. **Trajectory search**: for every map place ``e`` (in stamp order) and every velocity ``v`` in
   ``min_velocity..max_velocity`` (step ``velocity_step``; map places per query frame), the frame
   ``k`` frames back is compared with the place ``round(v * k)`` positions before ``e``. The
   trajectory's cost is the mean normalised difference along it; each
   end place keeps its best velocity. Places rank by that cost (optionally blended with the
   current frame's own normalised difference, ``single_frame_weight``), and a candidate within
   ``DISTINCT_WINDOW // 2`` positions of a better one is suppressed so the top-K are distinct
   hypotheses (OpenSeqSLAM's ``Rwindow`` of 10 around a match).

The score reported with a candidate is the mean raw similarity along its best trajectory (blended
the same way), so it keeps the units of the single-frame score and ``min_score`` thresholds.

**Distance spacing** (``spacing: distance``, the default; SMART, Pepperell et al., ICRA 2014): when
every query frame carries an odometry position and every map place a pose, the sequence is not
the last ``length`` frames but ``length`` recent frames picked at ``distance_step_m`` intervals of
travelled distance (odometry path length; 0 = the map's median place spacing, or the distance per
frame over the last ``length`` frames when that is longer, so a fast camera still gets ``length``
distinct frames), and a trajectory
places the frame ``d`` odometry metres back at the map place ``v * d`` metres before the end place
along the map's own path (places in stamp order, path length of their positions). A robot that
stops, or drives at twice the mapping speed, then still draws the same line through the map.
``min_velocity..max_velocity`` become map metres per odometry metre: the 0.8-1.2 default absorbs
an odometry scale error of up to 20 %. The trajectory's cost is then a weighted mean, each row
weighted by how certain its map point is (:func:`row_weights`), so that a velocity off by the scale
error does not move the end place by that error times half the sequence. Only differences of
odometry positions are used, so the odometry frame need not be the map's. A step whose map point
is more than one place spacing from any place (before the map's start, across a gap) is missing, as
off-map steps are in frame spacing.
Without odometry for the frame (or a map place without a pose) the frame-spaced sequence is used,
exactly as with ``spacing: frames``; ``without_odometry: single_frame`` answers such frames
single-frame instead (the node's default: frame spacing breaks when the speed differs from the
mapping run's, docs/sequence-matching.md).

Defaults are OpenSeqSLAM's (``ds`` 10, ``vmin`` 0.8, ``vmax`` 1.2, ``vskip`` 0.1) except the
contrast window (whole map instead of ``R`` 10, above). Where this differs from OpenSeqSLAM
otherwise, and why: trajectories end at the newest frame (online use), where SeqSLAM centres them
on the query; and a trajectory that runs off the start of the map is scored over its steps inside
the map when they are at least half of ``length`` (OpenSeqSLAM gives it infinite cost), so a loop
back to the start of a run is found after ``length / 2`` frames instead of ``length``. Places
missing from a frame's row (NaN: not in the map yet when the frame came, in incremental mode) are
left out of the mean and of the normalisation statistics the same way; the end place must be
known in the newest row.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vpr_ros.errors import ConfigError
from vpr_ros.mapdb.search import pick_best
from vpr_ros.settings import setting

MAX_LENGTH = 1000
SPACINGS = ('frames', 'distance')
WITHOUT_ODOMETRY = ('frames', 'single_frame')
DISTINCT_WINDOW = 10  # map places around a candidate that no other candidate may take (OpenSeqSLAM Rwindow)
_STD_FLOOR = 1e-9


@dataclass
class SequenceConfig:
    """SeqSLAM-style sequence matching; the node's ``sequence.*`` parameters, the ``--sequence-*`` options."""

    SETTINGS_PREFIX = 'sequence'

    length: int = setting(
        0, 'Match the last N processed frames as a trajectory through the map (SeqSLAM uses 10); 0 = '
        'single-frame matching. Until N frames have been seen (and after query time jumps back) frames are '
        'answered single-frame. Changing any sequence.* parameter restarts the history.',
        low=0, high=MAX_LENGTH,
        cli_help='match the last N frames as a trajectory (SeqSLAM uses 10); 0 = single frame')
    min_velocity: float = setting(
        0.8, 'Slowest trajectory searched, in map places per processed frame (map places ordered by stamp); '
        'on a map grown while running (incremental), scaled by the keyframes added per frame.',
        low=0.01, high=100.0)
    max_velocity: float = setting(1.2, 'Fastest trajectory searched (map places per processed frame).',
                                  low=0.01, high=100.0)
    velocity_step: float = setting(0.1, 'Step between the searched velocities.', low=0.001, high=100.0)
    contrast_window: int = setting(
        0, 'Map places of the contrast normalisation window (per frame): 0 = the whole map (default); R = '
        "OpenSeqSLAM's local window of R places centred on each place (docs/sequence-matching.md: it can "
        'make sequences worse than single frames where neighbouring places look alike).', low=0, high=100_000)
    single_frame_weight: float = setting(
        0.0, "Blend of the current frame's own normalised score into the ranking: 0 = sequence only, 1 = "
        'current frame only.', low=0.0, high=1.0)
    shortlist: int = setting(
        0, "0 = every frame scores every map place (exact); K = only each frame's top-K retrieved places, "
        'the rest get the K-th score (cheaper with approximate indexes).', low=0, high=1_000_000)
    spacing: str = setting(
        'distance', "'distance' (SMART): with odometry (use_odom) and a map whose places all have poses, the "
        'sequence is frames spaced by travelled distance, matched along the map path, so stops and speed '
        "changes do not break it (velocities: map metres per odometry metre); without odometry, as 'frames'. "
        "'frames': the last N processed frames (SeqSLAM).", choices=SPACINGS,
        cli_help='distance: with a pose per query frame (the pose topic) and a posed map, frames spaced by '
                 'travelled distance (SMART); frames: the last N frames')
    distance_step_m: float = setting(
        0.0, "Travelled metres between the frames of a distance-spaced sequence; 0 = the map's median place "
        'spacing (or the distance per frame when the camera moves faster).', low=0.0, high=1.0e6,
        cli_flag='--sequence-distance-step')
    without_odometry: str = setting(
        'frames', "Distance spacing, a frame without odometry (or a map place without a pose): 'frames' = "
        "frame-spaced sequence; 'single_frame' = exactly the single-frame answer.", choices=WITHOUT_ODOMETRY)

    @property
    def enabled(self) -> bool:
        return self.length > 0

    @property
    def needs_odometry(self) -> bool:
        """Frames without odometry (or on a map with unposed places) are answered single-frame."""
        return self.spacing == 'distance' and self.without_odometry == 'single_frame'

    def validate(self) -> None:
        if not 0 <= self.length <= MAX_LENGTH:
            raise ConfigError(f'sequence: length must be in 0..{MAX_LENGTH} (0 = single frame)')
        if not 0 < self.min_velocity <= self.max_velocity:
            raise ConfigError('sequence: need 0 < min_velocity <= max_velocity')
        if self.velocity_step <= 0:
            raise ConfigError('sequence: velocity_step must be > 0')
        if self.contrast_window < 0:
            raise ConfigError('sequence: contrast_window must be >= 0 (0 = the whole map)')
        if not 0.0 <= self.single_frame_weight <= 1.0:
            raise ConfigError('sequence: single_frame_weight must be in [0, 1]')
        if self.shortlist < 0:
            raise ConfigError('sequence: shortlist must be >= 0 (0 = full similarity rows)')
        if self.spacing not in SPACINGS:
            raise ConfigError(f'sequence: spacing must be one of {", ".join(SPACINGS)}, got {self.spacing!r}')
        if self.without_odometry not in WITHOUT_ODOMETRY:
            raise ConfigError(f'sequence: without_odometry must be one of {", ".join(WITHOUT_ODOMETRY)}, '
                              f'got {self.without_odometry!r}')
        if not (np.isfinite(self.distance_step_m) and self.distance_step_m >= 0):
            raise ConfigError('sequence: distance_step_m must be >= 0 (0 = the map\'s median place spacing)')

    def velocities(self) -> np.ndarray:
        n = int(np.floor((self.max_velocity - self.min_velocity) / self.velocity_step + 1e-9)) + 1
        return self.min_velocity + self.velocity_step * np.arange(n)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class SequenceMatch:
    place_id: int
    score: float      # mean similarity along the trajectory (blended with the frame's own)
    cost: float       # the ranking value: mean contrast-normalised difference (lower is better)
    velocity: float   # map places per query frame (distance spacing: map metres per odometry metre)


def contrast_normalise(diff: np.ndarray, window: int) -> np.ndarray:
    """Per row: each value minus the mean of the row's values within ``window // 2`` columns, over
    their sample std; ``window`` 0: over the whole row (a per-row standardisation).

    NaN entries stay NaN and are left out of the statistics; where the std vanishes the result is 0.
    """
    d = np.asarray(diff, np.float64)
    if d.ndim != 2:
        raise ValueError('contrast_normalise expects a (frames, places) array')
    if d.shape[1] == 0:
        return d.copy()
    valid = np.isfinite(d)
    if window <= 0:
        return _standardise_rows(d, valid)
    half, n_places = window // 2, d.shape[1]
    x = np.where(valid, d, 0.0)
    zero = np.zeros((d.shape[0], 1))
    s1 = np.concatenate([zero, np.cumsum(x, axis=1)], axis=1)
    s2 = np.concatenate([zero, np.cumsum(x * x, axis=1)], axis=1)
    cnt = np.concatenate([zero, np.cumsum(valid, axis=1, dtype=np.float64)], axis=1)
    cols = np.arange(n_places)
    lo, hi = np.maximum(cols - half, 0), np.minimum(cols + half + 1, n_places)
    n = cnt[:, hi] - cnt[:, lo]
    total = s1[:, hi] - s1[:, lo]
    with np.errstate(invalid='ignore', divide='ignore'):
        mean = total / n
        var = (s2[:, hi] - s2[:, lo] - n * mean * mean) / (n - 1)
        std = np.sqrt(np.maximum(var, 0.0))
        out = np.where(std > _STD_FLOOR, (d - mean) / std, 0.0)
    return np.where(valid, out, np.nan)


def _standardise_rows(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=1, keepdims=True)
    x = np.where(valid, d, 0.0)
    with np.errstate(invalid='ignore', divide='ignore'):
        mean = x.sum(axis=1, keepdims=True) / n
        dev = np.where(valid, d - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / (n - 1))
        out = np.where(std > _STD_FLOOR, dev / std, 0.0)
    return np.where(valid, out, np.nan)


def _offsets(velocities: np.ndarray, length: int) -> np.ndarray:
    """(V, L) place offsets of lag k = 0 (newest) .. L-1 (oldest) for every velocity."""
    lags = np.arange(length)
    return np.rint(velocities[:, None] * lags[None, :]).astype(np.int64)


def min_steps(length: int) -> int:
    """Known steps a trajectory needs to be a candidate: at least half of the sequence."""
    return max(1, (length + 1) // 2)


def _prepared(norm_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with unknowns as 0, 1/0 known counts) of one normalised row."""
    valid = np.isfinite(norm_row)
    return np.where(valid, norm_row, 0.0), valid.astype(np.float64)


def trajectory_costs(norm: np.ndarray | Sequence[np.ndarray], velocities: np.ndarray,
                     prepared: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Best trajectory per end place over normalised rows ``norm`` (L, P), oldest row first.

    Returns (cost (P,), velocity index (P,)); cost is inf where no trajectory has
    :func:`min_steps` known steps inside the map and NaN where the newest row is NaN.
    ``prepared``: :func:`_prepared` of each row, when the caller keeps them.
    """
    rows = list(norm)
    length, n_places = len(rows), len(rows[0])
    need = min_steps(length)
    prep = list(prepared) if prepared is not None else [_prepared(r) for r in rows]
    best = np.full(n_places, np.inf)
    best_v = np.zeros(n_places, np.int64)
    total = np.empty(n_places)
    n = np.empty(n_places)
    for vi, offs in enumerate(_offsets(velocities, length)):
        total[:] = 0.0
        n[:] = 0.0
        for lag, off in enumerate(offs):  # end e meets place e - off of the row `lag` frames back
            off = int(off)
            if off >= n_places:
                continue  # off the map for every end: a missing step
            vals, counts = prep[length - 1 - lag]
            total[off:] += vals[:n_places - off]
            n[off:] += counts[:n_places - off]
        with np.errstate(invalid='ignore', divide='ignore'):
            cost = np.where(n >= need, total / n, np.inf)
        better = cost < best
        best[better] = cost[better]
        best_v[better] = vi
    best[~np.isfinite(rows[-1])] = np.nan
    return best, best_v


def path_length(positions: np.ndarray) -> np.ndarray:
    """Cumulative path length [m] along (N, 3) positions, 0 at the first."""
    pos = np.asarray(positions, np.float64)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1) if len(pos) > 1 else np.zeros(0)
    return np.concatenate([[0.0], np.cumsum(steps)])


@dataclass(frozen=True)
class MapPath:
    """The map's own trajectory, for distance-spaced sequences: each place's path length along
    the places in stamp order, and the median spacing of consecutive places."""

    along: np.ndarray  # (P,) metres, non-decreasing, in stamp order
    spacing: float     # median of the positive steps between consecutive places

    @classmethod
    def of(cls, ordered_positions: np.ndarray) -> 'MapPath | None':
        """None when a place has no position or the places do not move (no path to measure along)."""
        pos = np.asarray(ordered_positions, np.float64)
        if len(pos) < 2 or not np.isfinite(pos).all():
            return None
        along = path_length(pos)
        steps = np.diff(along)
        steps = steps[steps > 1e-6]
        return cls(along, float(np.median(steps))) if len(steps) else None

    def places_at(self, targets: np.ndarray) -> np.ndarray:
        """Nearest place (position in stamp order) to each path length of ``targets``; -1 where no
        place is within one place spacing (before the map's start, past its end, across a gap)."""
        a = self.along
        j = np.searchsorted(a, targets)
        lo, hi = np.clip(j - 1, 0, len(a) - 1), np.clip(j, 0, len(a) - 1)
        pick = np.where(np.abs(a[hi] - targets) < np.abs(a[lo] - targets), hi, lo)
        return np.where(np.abs(a[pick] - targets) <= self.spacing, pick, -1)


def row_weights(back_m: np.ndarray, velocities: np.ndarray, spacing: float) -> np.ndarray:
    """Weight of each distance-spaced row in a trajectory's cost: ``1 / (1 + u)``, ``u`` the
    uncertainty of the row's map point in place spacings, ``(max - min velocity) / 2 * back_m /
    spacing`` (the searched velocities disagree about where a row ``back_m`` metres back lies by
    that much). The newest row weighs 1; with one velocity every row does (plain SeqSLAM mean).

    Measured (docs/sequence-matching.md): with an equal weight per row a velocity off by the
    odometry's scale error moved the end place by that error times half the sequence, which put
    sequences below single frames on weak evidence."""
    half_range = (float(np.max(velocities)) - float(np.min(velocities))) / 2
    return 1.0 / (1.0 + half_range * np.asarray(back_m, np.float64) / max(spacing, 1e-9))


def distance_trajectory_costs(path: MapPath, back_m: np.ndarray, velocities: np.ndarray,
                              prepared: Sequence[tuple[np.ndarray, np.ndarray]], need: int,
                              newest_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best distance-spaced trajectory per end place: the row of ``back_m[i]`` odometry metres before
    the newest frame meets the place nearest to ``velocity * back_m[i]`` map metres before the end
    place. ``prepared``: :func:`_prepared` rows in the order of ``back_m``. Returns (cost, velocity
    index) as :func:`trajectory_costs` does, with ``need`` known steps required.

    The cost is a weighted mean: a row's weight is :func:`row_weights` (the older the row, the less
    certain its map point), so a line whose velocity is off pivots about a point near its end
    instead of its middle, and its end place moves less."""
    n_places = len(path.along)
    best = np.full(n_places, np.inf)
    best_v = np.zeros(n_places, np.int64)
    total = np.empty(n_places)
    n = np.empty(n_places)
    steps = np.empty(n_places)
    weights = row_weights(back_m, velocities, path.spacing)
    for vi, v in enumerate(velocities):
        total[:] = 0.0
        n[:] = 0.0
        steps[:] = 0.0
        for (vals, counts), back, weight in zip(prepared, back_m, weights):
            idx = path.places_at(path.along - v * back)
            known = idx >= 0
            safe = np.where(known, idx, 0)
            c = np.where(known, counts[safe], 0.0)
            total += weight * np.where(known, vals[safe], 0.0)
            n += weight * c
            steps += c
        with np.errstate(invalid='ignore', divide='ignore'):
            cost = np.where(steps >= need, total / n, np.inf)
        better = cost < best
        best[better] = cost[better]
        best_v[better] = vi
    best[~np.isfinite(newest_norm)] = np.nan
    return best, best_v


@dataclass(frozen=True)
class DistanceLines:
    """Where a distance-spaced sequence's rows lie: the map's path and each row's odometry metres
    back from the newest frame (rows oldest first, the newest at 0)."""

    path: MapPath
    back_m: np.ndarray


class _Ranker:
    """Ranking of one window of (L, P) raw similarity rows, in stamp order of places."""

    def __init__(self, config: SequenceConfig) -> None:
        self.config = config
        self.velocities = config.velocities()
        self.offsets = _offsets(self.velocities, max(config.length, 1))

    def rank(self, sims: Sequence[np.ndarray], norm: Sequence[np.ndarray], order: np.ndarray, k: int,
             excluded_ordered: np.ndarray | None,
             prepared: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
             velocity_scale: float = 1.0, lines: DistanceLines | None = None) -> list[SequenceMatch]:
        """``sims``/``norm``: the window's rows (raw similarities / normalised), oldest first.
        ``velocity_scale`` multiplies the configured velocities (see :meth:`SequenceMatcher.rank`);
        ``lines``: the rows are distance-spaced (velocities are then map metres per odometry metre)."""
        cfg = self.config
        velocities, offsets = self.velocities, self.offsets
        if lines is not None:
            prep = list(prepared) if prepared is not None else [_prepared(r) for r in norm]
            cost, best_v = distance_trajectory_costs(lines.path, lines.back_m, velocities, prep,
                                                     min_steps(cfg.length), norm[-1])
        else:
            if velocity_scale != 1.0:
                velocities = velocities * velocity_scale
                offsets = _offsets(velocities, max(cfg.length, 1))
            cost, best_v = trajectory_costs(norm, velocities, prepared)
        w = cfg.single_frame_weight
        if w >= 1.0:  # the current frame only (a trajectory's inf cost times 0 would be NaN)
            rank_value = np.asarray(norm[-1], np.float64)
        else:
            rank_value = (1.0 - w) * cost + w * norm[-1] if w > 0 else cost
        picked = pick_best(rank_value, k, DISTINCT_WINDOW // 2, excluded_ordered)
        length = len(sims)
        out = []
        for pos in picked:
            velocity = float(velocities[best_v[pos]])
            if lines is not None:
                idx = lines.path.places_at(lines.path.along[pos] - velocity * lines.back_m)
                along = [sims[i][j] for i, j in enumerate(idx) if j >= 0]
            else:
                offs = offsets[best_v[pos]]
                along = [sims[length - 1 - lag][pos - off] for lag, off in enumerate(offs) if pos - off >= 0]
            score = float(np.nanmean(along))
            if w > 0:
                score = (1.0 - w) * score + w * float(sims[-1][pos])
            out.append(SequenceMatch(int(order[pos]), score, float(rank_value[pos]), velocity))
        return out


def stamp_order(place_stamps: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray(place_stamps, np.float64), kind='stable')


def sequence_match(similarity: np.ndarray, place_stamps: np.ndarray, config: SequenceConfig, k: int = 1,
                   exclude: Iterable[Iterable[int]] | None = None, query_positions: np.ndarray | None = None,
                   place_positions: np.ndarray | None = None) -> list[list[SequenceMatch] | None]:
    """Offline: rank map places for every query row of ``similarity`` (Q, P), rows in query-time order.

    Row q uses rows q-length+1..q; the first ``length - 1`` queries have too little history and
    get None (callers fall back to single-frame matching). ``exclude``: per query, place ids that
    may not be candidates. ``query_positions`` (Q, 3) odometry (NaN rows: none for that frame) and
    ``place_positions`` (P, 3) by place id: distance spacing (``config.spacing``), where a query
    gets None until its odometry covers the sequence. Gives the same answers as
    :class:`SequenceMatcher` fed the same rows.
    """
    config.validate()
    if not config.enabled:
        raise ConfigError('sequence_match needs config.length >= 1')
    sims = np.asarray(similarity, np.float64)
    excludes = list(exclude) if exclude is not None else None
    if config.spacing == 'distance' and query_positions is not None and place_positions is not None:
        matcher = SequenceMatcher(config)
        order = stamp_order(place_stamps)
        qpos = np.asarray(query_positions, np.float64)
        ranked: list[list[SequenceMatch] | None] = []
        for q in range(len(sims)):
            matcher.push(float(q), sims[q], qpos[q] if np.isfinite(qpos[q]).all() else None)
            excluded_ids = set(excludes[q]) if excludes is not None and excludes[q] else None
            ranked.append(matcher.rank(place_stamps, k, excluded_ids, order, place_positions=place_positions))
        return ranked
    order = stamp_order(place_stamps)
    ordered = sims[:, order]
    norm = contrast_normalise(-ordered, config.contrast_window)
    ranker = _Ranker(config)
    rank_of = np.empty(len(order), np.int64)
    rank_of[order] = np.arange(len(order))
    out: list[list[SequenceMatch] | None] = []
    for q in range(len(sims)):
        if q + 1 < config.length:
            out.append(None)
            continue
        excluded = None
        if excludes is not None and excludes[q]:
            excluded = np.zeros(len(order), bool)
            excluded[rank_of[list(excludes[q])]] = True
        window = slice(q + 1 - config.length, q + 1)
        out.append(ranker.rank(ordered[window], norm[window], order, k, excluded))
    return out


def select_by_distance(travelled: Sequence[float], step: float, length: int) -> list[int] | None:
    """Indices (oldest first) of the frames nearest to 0, step, 2 step ... (length - 1) step metres
    before the newest (SMART's fixed travelled-distance intervals), each frame once; None while the
    history covers less than ``(length - 1) * step - step / 2`` metres or picks fewer than
    :func:`min_steps` frames. ``travelled``: path length of each kept frame, oldest first."""
    t = np.asarray(travelled, np.float64)
    if not len(t) or t[-1] - t[0] < (length - 1) * step - step / 2:
        return None
    picked: list[int] = []
    for j in range(length):
        i = int(np.argmin(np.abs(t - (t[-1] - j * step))[::-1]))  # ties: the newer frame
        i = len(t) - 1 - i
        if not picked or i < picked[-1]:
            picked.append(i)
    return picked[::-1] if len(picked) >= min_steps(length) else None


class _Row:
    """One frame's similarity row (by place id) and, per map state, its stamp-order form and
    normalisation (a row's normalisation depends on nothing else, so it is computed once per map)."""

    __slots__ = ('raw', 'key', 'ordered', 'norm', 'prepared')

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw
        self.key: Any = None

    def ready(self, key: Any, n_places: int, order: np.ndarray, window: int) -> '_Row':
        if self.key != key:
            padded = np.full(n_places, np.nan)
            m = min(len(self.raw), n_places)
            padded[:m] = self.raw[:m]
            self.ordered = padded[order]
            self.norm = contrast_normalise(-self.ordered[None], window)[0]
            self.prepared = _prepared(self.norm)
            self.key = key
        return self


def shortlist_row(place_ids: Iterable[int], scores: Iterable[float], n_places: int) -> np.ndarray:
    """A dense similarity row from a top-K shortlist: unlisted places get the lowest listed score

    (an upper bound on their true similarity); with no list at all the row is NaN.
    """
    ids = np.asarray(list(place_ids), np.int64)
    vals = np.asarray(list(scores), np.float64)
    if not len(ids):
        return np.full(n_places, np.nan)
    row = np.full(n_places, float(vals.min()))
    row[ids] = vals
    return row


class SequenceMatcher:
    """Online SeqSLAM: keeps the similarity rows of the last ``length`` frames (memory: length x places),
    and with odometry the frames spaced by travelled distance (about 2 x length rows more).

    :meth:`push` each processed frame's similarity to every current map place (by place id) and
    its odometry position (None without), then :meth:`rank`. History restarts when query time
    goes backwards; the distance history restarts when a frame comes without odometry.
    """

    def __init__(self, config: SequenceConfig) -> None:
        config.validate()
        if not config.enabled:
            raise ConfigError('SequenceMatcher needs length >= 1')
        self.config = config
        self._ranker = _Ranker(config)
        self._rows: deque[_Row] = deque(maxlen=config.length)
        self._last_stamp: float | None = None
        # Distance spacing: (path length, row) of kept frames, oldest first; a frame within half a
        # step of the one before it is dropped when a newer one comes (a stop keeps one frame).
        self._by_distance: list[tuple[float, _Row]] = []
        self._position: np.ndarray | None = None
        self._travelled = 0.0
        self._recent: deque[float] = deque(maxlen=config.length)  # path length of the last frames
        self._step_m: float | None = None  # the step of the last distance-spaced rank
        self._path: tuple[Any, MapPath | None] = (None, None)
        self.last_spacing = ''  # 'frames' / 'distance': how the last sequence answer was spaced

    def reset(self) -> None:
        self._rows.clear()
        self._last_stamp = None
        self._reset_distance()

    def _reset_distance(self) -> None:
        self._by_distance.clear()
        self._position = None
        self._travelled = 0.0
        self._recent.clear()

    @property
    def history(self) -> int:
        return len(self._rows)

    def push(self, stamp: float, similarity_row: np.ndarray, position: Sequence[float] | None = None) -> None:
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.reset()
        self._last_stamp = float(stamp)
        row = _Row(np.asarray(similarity_row, np.float32))
        self._rows.append(row)
        if position is None or self.config.spacing != 'distance':
            self._reset_distance()
            return
        pos = np.asarray(position, np.float64)[:3]
        if self._position is not None:
            self._travelled += float(np.linalg.norm(pos - self._position))
        self._position = pos
        self._recent.append(self._travelled)
        kept = self._by_distance
        step = self._step_m
        if step and len(kept) >= 2 and kept[-1][0] - kept[-2][0] < step / 2:
            kept.pop()
        kept.append((self._travelled, row))
        span = (self.config.length - 1) * step + step if step else np.inf
        cap = 4 * self.config.length + 4  # before the first rank knows the step
        while len(kept) > 2 and (self._travelled - kept[1][0] >= span or len(kept) > cap):
            kept.pop(0)

    def rank(self, place_stamps: np.ndarray, k: int, exclude: set[int] | None = None,
             order: np.ndarray | None = None, velocity_scale: float = 1.0,
             place_positions: np.ndarray | None = None) -> list[SequenceMatch] | None:
        """Top-k sequence candidates for the newest frame; None with too little history (fewer
        than ``length`` frames; distance spacing: odometry covering less than the sequence).

        ``place_stamps``: stamps of the current map places (by id); rows pushed when the map was
        smaller count as unknown (NaN) for the places added since. ``order``: a cached
        :func:`stamp_order` of ``place_stamps``. ``velocity_scale``: map places per frame that a
        velocity of 1 means (a map grown from these frames advances one keyframe per few frames;
        frame spacing only). ``place_positions`` (P, 3) by place id: with odometry pushed for
        the newest frame and every place posed, the sequence is distance-spaced.
        """
        n_places = len(place_stamps)
        order = stamp_order(place_stamps) if order is None else order
        key = (n_places, hash(order.tobytes()))
        path = self._map_path(key, place_positions, order) if self._by_distance else None
        if path is None:
            self.last_spacing = 'frames'
            if len(self._rows) < self.config.length or self.config.needs_odometry:
                return None
            rows = list(self._rows)
            lines = None
        else:
            self.last_spacing = 'distance'
            self._step_m = self.config.distance_step_m or self._auto_step(path)
            picked = select_by_distance([t for t, _ in self._by_distance], self._step_m, self.config.length)
            if picked is None:
                return None
            rows = [self._by_distance[i][1] for i in picked]
            lines = DistanceLines(path, self._travelled - np.array([self._by_distance[i][0] for i in picked]))
        if n_places == 0:
            return []
        rows = [r.ready(key, n_places, order, self.config.contrast_window) for r in rows]
        excluded = None
        if exclude:
            ids = np.fromiter((p for p in exclude if 0 <= p < n_places), np.int64)
            excluded = np.isin(order, ids)
        return self._ranker.rank([r.ordered for r in rows], [r.norm for r in rows], order, k, excluded,
                                 [r.prepared for r in rows], velocity_scale, lines)

    def _auto_step(self, path: MapPath) -> float:
        """One map place spacing, or the distance per frame over the last ``length`` frames when the
        camera moves faster than one place per frame (a sequence keeps ``length`` distinct frames)."""
        recent = self._recent
        per_frame = (recent[-1] - recent[0]) / (len(recent) - 1) if len(recent) > 1 else 0.0
        return max(path.spacing, per_frame)

    def _map_path(self, key: Any, place_positions: np.ndarray | None, order: np.ndarray) -> MapPath | None:
        if place_positions is None:
            return None
        if self._path[0] != key:
            self._path = (key, MapPath.of(np.asarray(place_positions, np.float64)[order, :3]))
        return self._path[1]


__all__ = ['DISTINCT_WINDOW', 'MAX_LENGTH', 'SPACINGS', 'WITHOUT_ODOMETRY', 'DistanceLines', 'MapPath',
           'SequenceConfig', 'SequenceMatch', 'SequenceMatcher', 'contrast_normalise',
           'distance_trajectory_costs', 'min_steps', 'path_length', 'row_weights', 'select_by_distance',
           'sequence_match', 'shortlist_row', 'stamp_order', 'trajectory_costs']

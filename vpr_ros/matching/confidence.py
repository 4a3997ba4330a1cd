"""A calibrated confidence: the probability that an answer's top-1 place is right, estimated on the map.

Scores mean different things per encoder (a cosine of another space, a vote sum), so no fixed
score threshold or score-to-covariance range can say how far to trust an answer. Instead each map
carries a small model fitted on its own places, in the spirit of Platt scaling (Platt 1999) and of
per-query uncertainty for VPR ("To Match or Not to Match", CVPRW 2025, decides from the retrieval's
uncertainty whether to verify):

* features of one answer (its top-K matches, best first, K = ``CONFIDENCE_K``), both invariant to
  the scale of the scores, which shrinks under a change of light or season: the *margin* between the
  first candidate and the best candidate at *another place* (more than ``2 dist_m`` away; without
  poses ``2 other_place_s`` of map time) over the spread of the top-K scores (Lowe's ratio test for
  global descriptors; the second candidate is mostly the top-1's own neighbouring keyframe, which a
  threshold of ``dist_m`` counts as the same answer), and whether the top-1 *agrees* with the
  previous answer's top-1 (within ``2 dist_m``), the temporal consistency every VPR loop-closure
  filter relies on: a right answer is followed by a right answer nearby, a wrong one by another
  wrong one anywhere. The first answer of a run has no previous one; its agreement is the training
  mean;
* training examples: self-retrieval of up to ``MAX_QUERIES`` map places (runs of consecutive places
  spread over the map, in map time order), each in two ways that simulate a query from elsewhere:
  *displaced*, against the map without the place and every place within ``r`` metres of it along
  the map's path, ``r`` drawn uniformly in [0, dist_m) (seeded), so its right answers are views of
  the place from r..dist_m away, as for queries anywhere within the threshold (every map, a single
  pass too, gives examples of both outcomes); and *revisit*, against the map without the places
  within ``exclude_s`` seconds (by default LIO-SAM's 30 s loop-closure separation), when another pass
  came within ``dist_m`` (a query from another run). Only examples with a right answer left in the
  map count: the confidence is the probability that the top-1 is right for a query of a mapped place
  (an unmapped place has no right answer; telling the two apart is another question). An example is
  correct when its top-1 lies within ``dist_m`` of the query place's pose;
* the model: logistic regression on the standardised features with a weak Gaussian prior (L2,
  ``PRIOR_PRECISION``), which keeps it finite when one outcome is rare.

What it cannot know: how much harder the user's queries are than the map's own views. Under a change
the map never saw (another season, a camera turned by 30 degrees) the accuracy at a given margin
drops, and the confidence is then too high (docs/confidence.md has the measurements).

The model is stored in ``map.yaml`` (``confidence``) by ``build-map`` and ``~/save_map``; a map
written without one (or with an older model format) is calibrated when it is loaded. ``evaluate``
reports the calibration on the queries (expected calibration error, reliability diagram).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from vpr_ros.errors import MapError
from vpr_ros.evaluation.results import CalibrationError
from vpr_ros.mapdb.search import global_row, pick_best
from vpr_ros.settings import setting

if TYPE_CHECKING:
    from vpr_ros.mapdb.store import Match, VprMap

CONFIDENCE_K = 50          # candidates the features look at (the Localizer retrieves at least this many)
DEFAULT_DIST_M = 25.0      # what "right" means: the top-1 within this distance (the package's default)
DEFAULT_EXCLUDE_S = 30.0   # time neighbours left out of revisit examples (LIO-SAM's loop separation)
MIN_EXAMPLES = 10          # right self-retrievals needed before a model is fitted
PRIOR_PRECISION = 1.0      # L2 on the standardised coefficients (a unit Gaussian prior)
MAX_QUERIES = 300          # map places retrieved to calibrate (runs of consecutive places): bounds the fit
MODEL_FORMAT = 3
FEATURES = ('distinct_margin_over_spread', 'agrees_with_previous')


def _near(a: 'Match', b: 'Match', dist_m: float, other_place_s: float) -> bool:
    if a.pose is not None and b.pose is not None:
        return math.dist(a.pose.position[:2], b.pose.position[:2]) <= dist_m
    return abs(float(a.stamp) - float(b.stamp)) <= other_place_s


def features(matches: 'Sequence[Match]', dist_m: float, other_place_s: float,
             previous: 'Match | None' = None) -> np.ndarray | None:
    """(distinct margin over spread, agreement with the previous answer: 1, 0, or NaN without one)
    of one answer (its candidates, best first); None without a match.

    The margin is to the best candidate at *another place* (more than ``2 dist_m`` from the top-1;
    without poses ``2 other_place_s`` of map time), not to the second candidate, which is mostly
    the top-1's own neighbouring keyframe; it is divided by the spread of the listed scores. When
    every listed candidate is at the top-1's place, the last one stands in for the other place."""
    if not matches:
        return None
    top = matches[0]
    scores = [float(m.score) for m in matches]
    spread = scores[0] - scores[-1]
    other = next((float(m.score) for m in matches[1:] if not _near(top, m, 2 * dist_m, 2 * other_place_s)),
                 scores[-1])
    margin = (scores[0] - other) / spread if len(scores) > 1 and spread > 0 else 1.0
    agrees = (math.nan if previous is None
              else float(_near(top, previous, 2 * dist_m, 2 * other_place_s)))
    return np.array([margin, agrees], np.float64)


@dataclass(frozen=True)
class ConfidenceModel:
    """P(top-1 right) = sigmoid(bias + coef . (features - mean) / scale)."""

    dist_m: float
    exclude_s: float        # the time window of the revisit examples
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    examples: int
    correct: int
    other_place_s: float = 10.0
    format: int = MODEL_FORMAT

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(right) of feature rows; a missing feature (NaN) takes the training mean (no evidence)."""
        z = (np.atleast_2d(x) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = np.where(np.isnan(z), 0.0, z)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.bias)))

    def confidence(self, matches: 'Sequence[Match]', previous: 'Match | None' = None) -> float:
        """The probability that ``matches[0]`` is within ``dist_m`` of the query (NaN without a match);
        ``previous``: the previous answer's top-1 in this run."""
        x = features(matches, self.dist_m, self.other_place_s, previous)
        return math.nan if x is None else float(self.probability(x)[0])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(features=list(FEATURES), mean=list(self.mean), scale=list(self.scale), coef=list(self.coef))
        return d

    @staticmethod
    def from_dict(data: dict[str, Any]) -> 'ConfidenceModel':
        """Parse map.yaml's ``confidence`` section; a MapError names what is wrong."""
        try:
            if data.get('format') != MODEL_FORMAT or list(data.get('features', [])) != list(FEATURES):
                raise ValueError(f"format {data.get('format')!r} / features {data.get('features')!r}")
            model = ConfidenceModel(
                float(data['dist_m']), float(data['exclude_s']), tuple(map(float, data['mean'])),
                tuple(map(float, data['scale'])), tuple(map(float, data['coef'])), float(data['bias']),
                int(data['examples']), int(data['correct']), float(data.get('other_place_s', 10.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MapError(f'map.yaml confidence section is not a model this vpr_ros reads ({exc})') from exc
        n = len(FEATURES)
        if not (len(model.mean) == len(model.scale) == len(model.coef) == n) or min(model.scale) <= 0:
            raise MapError('map.yaml confidence section: mean, scale and coef need one positive-scale entry '
                           f'per feature {FEATURES}')
        return model


def fit_logistic(x: np.ndarray, y: np.ndarray, prior_precision: float = PRIOR_PRECISION,
                 iterations: int = 50) -> tuple[np.ndarray, float]:
    """MAP logistic regression (Newton's method; the bias has no prior). Returns (coef, bias)."""
    n, d = x.shape
    a = np.column_stack([x, np.ones(n)])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, prior_precision)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + reg * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], float(w[-1])


def sampled_runs(n: int, max_queries: int, run: int = 10) -> np.ndarray:
    """Positions 0..n-1 (in map time order) to retrieve: runs of ``run`` consecutive places spread
    evenly over the map, at most about ``max_queries`` of them (the agreement feature needs the
    previous place)."""
    runs = max(1, min(n, max_queries) // run)
    starts = np.unique(np.linspace(0, max(n - run, 0), runs).round().astype(int))
    return np.unique(np.concatenate([np.arange(s, min(s + run, n)) for s in starts]))


class _Retriever:
    """Top-K of a map place against the map without some places: its similarity row (one pass over
    the stored descriptors, computed once per place) on a global-descriptor map, the map's own
    (voting) search on a multi-vector map."""

    def __init__(self, vmap: 'VprMap') -> None:
        self.vmap = vmap
        self._row: tuple[int, np.ndarray] | None = None

    def top(self, i: int, excluded: np.ndarray) -> 'list[Match]':
        vmap = self.vmap
        if vmap.meta.multi_vector:
            return vmap.search(np.asarray(vmap.descriptors[vmap.owners == i], np.float32), CONFIDENCE_K,
                               set(np.flatnonzero(excluded).tolist()))
        if self._row is None or self._row[0] != i:
            self._row = (i, global_row(vmap, np.asarray(vmap.descriptors[i], np.float32)))
        row = self._row[1]
        return [vmap.match(p, float(row[p])) for p in pick_best(-row, CONFIDENCE_K, 0, excluded)]


def self_retrieval(vmap: 'VprMap', exclude_s: float, dist_m: float, max_queries: int,
                   other_place_s: float, progress: bool = False,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and correctness (top-1 within dist_m) of self-retrievals of sampled map places (module
    doc), in map time order; two kinds of example per place:

    * *displaced*: the place against the map without itself and every place within ``r`` metres of
      it along the map's path, ``r`` drawn uniformly from [0, dist_m) (seeded): its right answers
      are then views of the place from r..dist_m away, as for a query anywhere within the threshold;
    * *revisit*: the place against the map without the places within ``exclude_s`` seconds of it,
      when another pass came within dist_m (a query from another run).

    Only examples with a right answer left in the map count (the question is P(right) for a query
    of a mapped place)."""
    places = vmap.places
    stamps = places.stamps
    poses = places.poses
    order = np.argsort(stamps, kind='stable')
    posed = ~np.isnan(poses[:, 0])
    along = np.full(len(stamps), np.nan)
    ordered_posed = order[posed[order]]
    if len(ordered_posed):
        steps = np.linalg.norm(np.diff(poses[ordered_posed, :2], axis=0), axis=1)
        along[ordered_posed] = np.concatenate([[0.0], np.cumsum(steps)])
    retriever = _Retriever(vmap)
    rng = np.random.default_rng(seed)
    picked = sampled_runs(len(stamps), max_queries)
    radius = rng.uniform(0.0, dist_m, len(picked))
    xs: list[np.ndarray] = []
    ys: list[bool] = []
    previous: dict[str, tuple[Any, int]] = {}
    for j, k in enumerate(tqdm(picked, desc='calibrating confidence', disable=not progress, unit='place')):
        i = int(order[k])
        if not posed[i]:
            continue
        near = np.linalg.norm(poses[:, :2] - poses[i, :2], axis=1) <= dist_m  # NaN (unposed): False
        kinds = {'displaced': np.abs(along - along[i]) < radius[j],
                 'revisit': np.abs(stamps - stamps[i]) <= exclude_s}
        for kind, excluded in kinds.items():
            excluded = excluded | (np.arange(len(stamps)) == i)
            if not (near & ~excluded).any():
                continue
            matches = retriever.top(i, excluded)
            if not matches or matches[0].pose is None:
                continue
            before, at = previous.get(kind, (None, -2))
            xs.append(features(matches, dist_m, other_place_s, before if at == k - 1 else None))
            previous[kind] = (matches[0], k)
            ys.append(math.dist(poses[i, :2], matches[0].pose.position[:2]) <= dist_m)
    return np.asarray(xs, np.float64).reshape(-1, len(FEATURES)), np.asarray(ys, np.float64)


def fit_confidence(vmap: 'VprMap', dist_m: float = DEFAULT_DIST_M, exclude_s: float = DEFAULT_EXCLUDE_S,
                   max_queries: int = MAX_QUERIES, progress: bool = False) -> ConfidenceModel | None:
    """The map's confidence model (module doc); None when the map gives fewer than MIN_EXAMPLES right
    self-retrievals (too few places or poses)."""
    if len(vmap) < 2 * MIN_EXAMPLES:
        return None
    other_place_s = _other_place_s(vmap, dist_m)
    x, y = self_retrieval(vmap, exclude_s, dist_m, max_queries, other_place_s, progress)
    right = int(y.sum())
    if right < MIN_EXAMPLES:
        return None
    mean = np.nanmean(x, axis=0)
    scale = np.maximum(np.nan_to_num(np.nanstd(x, axis=0)), 1e-6)
    coef, bias = fit_logistic(np.nan_to_num((x - mean) / scale), y)
    return ConfidenceModel(float(dist_m), float(exclude_s), tuple(map(float, mean)), tuple(map(float, scale)),
                           tuple(map(float, coef)), bias, len(y), right, other_place_s)


def _other_place_s(vmap: 'VprMap', dist_m: float) -> float:
    """Map time in which the camera typically covers ``dist_m`` (the 'another place' test without poses)."""
    places = vmap.places
    poses, stamps = places.poses, places.stamps
    ok = ~np.isnan(poses[:, 0])
    if ok.sum() < 2:
        return 10.0
    order = np.argsort(stamps[ok])
    xy, t = poses[ok][order, :2], stamps[ok][order]
    step = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    dt = np.diff(t)
    moving = (step > 0) & (dt > 0)
    if not moving.any():
        return 10.0
    speed = float(np.median(step[moving] / dt[moving]))
    return float(dist_m / speed) if speed > 0 else 10.0


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool],
                               bins: int = 10) -> CalibrationError:
    """ECE over ``bins`` equal-width confidence bins (Naeini et al. 2015; Guo et al. 2017) and the
    reliability diagram's bins; answers without a confidence (NaN) are left out and counted."""
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, np.float64)
    known = np.isfinite(c)
    c, y = c[known], y[known]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        conf, acc = float(c[sel].mean()), float(y[sel].mean())
        ece += sel.sum() / len(c) * abs(acc - conf)
        rows.append({'low': round(float(edges[b]), 3), 'high': round(float(edges[b + 1]), 3),
                     'count': int(sel.sum()), 'confidence': round(conf, 4), 'accuracy': round(acc, 4)})
    return {'ece': round(float(ece), 4) if len(c) else None, 'answers': int(len(c)),
            'without_confidence': int((~known).sum()), 'mean_confidence': round(float(c.mean()), 4) if len(c)
            else None, 'accuracy': round(float(y.mean()), 4) if len(c) else None,
            'brier': round(float(np.mean((c - y) ** 2)), 4) if len(c) else None, 'bins': rows}


@dataclass(frozen=True)
class CovarianceModel:
    """Standard deviations of the matched pose; the node's ``covariance.*`` parameters.

    With a calibrated confidence p (the probability that the place is right,
    vpr_ros.matching.confidence) the pose is a mixture: right with probability p (``sigma_*_min``)
    or anywhere (``sigma_*_max``); its variance is ``p sigma_min^2 + (1 - p) sigma_max^2``. Without
    one (NaN: a map too small to calibrate) the standard deviations grow linearly as the score
    falls from ``score_high`` to ``score_low``.
    """

    SETTINGS_PREFIX = 'covariance'

    score_low: float = setting(0.5, 'Without a calibrated confidence (a map of < 20 places): score at (and '
                               'below) which the pose sigmas reach their maximum.')
    score_high: float = setting(0.95, 'Without a calibrated confidence: score at (and above) which the pose '
                                'sigmas reach their minimum.')
    sigma_xy_min: float = setting(1.0, 'Position standard deviation [m] of a right match (x, y, z); the '
                                  'variance is p sigma_min^2 + (1 - p) sigma_max^2 for confidence p.',
                                  low=0.0, high=1.0e4)
    sigma_xy_max: float = setting(25.0, 'Position standard deviation [m] of a wrong match (x, y, z).',
                                  low=0.0, high=1.0e4)
    sigma_yaw_min: float = setting(0.2, 'Rotation standard deviation [rad] of a right match (roll, pitch, '
                                   'yaw).', low=0.0, high=math.pi)
    sigma_yaw_max: float = setting(math.pi, 'Rotation standard deviation [rad] of a wrong match.',
                                   low=0.0, high=math.pi)

    def score_level(self, score: float) -> float:
        """0 at (and below) ``score_low``, 1 at (and above) ``score_high``, linear between."""
        return float(np.clip((score - self.score_low) / (self.score_high - self.score_low), 0.0, 1.0))

    def sigmas(self, score: float, confidence: float = math.nan) -> tuple[float, float]:
        """(position sigma [m], rotation sigma [rad]) for a match's confidence, or else its score."""
        if math.isfinite(confidence):
            p = float(np.clip(confidence, 0.0, 1.0))
            return (math.sqrt(p * self.sigma_xy_min ** 2 + (1 - p) * self.sigma_xy_max ** 2),
                    math.sqrt(p * self.sigma_yaw_min ** 2 + (1 - p) * self.sigma_yaw_max ** 2))
        a = self.score_level(score)
        return (self.sigma_xy_max + a * (self.sigma_xy_min - self.sigma_xy_max),
                self.sigma_yaw_max + a * (self.sigma_yaw_min - self.sigma_yaw_max))

    def covariance(self, score: float, confidence: float = math.nan) -> np.ndarray:
        """Row-major 6x6 (x, y, z, roll, pitch, yaw) diagonal covariance as 36 float64."""
        s_xy, s_rot = self.sigmas(score, confidence)
        return np.diag([s_xy ** 2] * 3 + [s_rot ** 2] * 3).astype(np.float64).reshape(36)


__all__ = ['CONFIDENCE_K', 'DEFAULT_DIST_M', 'FEATURES', 'MAX_QUERIES', 'ConfidenceModel', 'CovarianceModel',
           'expected_calibration_error', 'features', 'fit_confidence', 'fit_logistic', 'sampled_runs',
           'self_retrieval']

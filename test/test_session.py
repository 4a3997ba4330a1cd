"""The incremental session: localise-and-grow (frame thread) and decide-loop (loop thread) on small maps."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from test.helpers import blob_image
from vpr_ros import features as lf
from vpr_ros.encoders import create_encoder
from vpr_ros.frames import Pose
from vpr_ros.localization import Localizer
from vpr_ros.mapdb.local_features import LocalFeatureStore
from vpr_ros.mapdb.store import VprMap
from vpr_ros.matching import verification
from vpr_ros.matching.keyframes import KeyframeGate
from vpr_ros.matching.loop_closure import LoopClosureConfig, LoopClosureFilter, LoopStatus
from vpr_ros.session import IncrementalSession
from vpr_ros.vocabulary import VocabularyBootstrap

SIZE = (240, 320)
SEPARATION_S = 10.0
PLACES = 6


def look(place: int, shift: int = 0) -> np.ndarray:
    """A place's image: distinct blobs (raw_pixels tells them apart, local features match them)."""
    return np.roll(blob_image(place, SIZE), shift, axis=1)


def pose(place: int) -> Pose:
    return Pose.from_xy_yaw(20.0 * place, 0.0, 0.0)


def empty_localizer(encoder_config: dict | None = None) -> Localizer:
    encoder = create_encoder('raw_pixels', {'threads': 1, **(encoder_config or {})})
    vmap = VprMap.empty(encoder.identity(), encoder_state=encoder.get_state())
    vmap.local_features = LocalFeatureStore(lf.LocalFeatureConfig(max_keypoints=300))
    return Localizer(vmap, encoder, top_k=3)


def session_on(localizer: Localizer, lock: threading.Lock | None = None, **kwargs) -> IncrementalSession:
    config = LoopClosureConfig(min_time_separation=SEPARATION_S, consistency_frames=1, verified_frames=1)
    return IncrementalSession(localizer, LoopClosureFilter(config), KeyframeGate(min_interval=0.0),
                              verification.for_map(localizer.map), map_lock=lock, **kwargs)


def first_pass(session: IncrementalSession) -> list:
    """Places 0..5, one frame each, 1 s and 20 m apart."""
    return [session.localize(100.0 + i, look(i), pose(i), f'frame{i}') for i in range(PLACES)]


def test_frames_become_places_and_the_places_of_the_last_seconds_are_not_searched(tmp_path) -> None:
    localizer = empty_localizer()
    session = session_on(localizer)
    frames = first_pass(session)
    assert [f.added for f in frames] == [(i,) for i in range(PLACES)] and all(f.keyframe for f in frames)
    assert session.places == [(i, 100.0 + i) for i in range(PLACES)]
    assert [p.source for p in localizer.map.places] == [f'frame{i}' for i in range(PLACES)]
    # the last place again, 0.5 s later: every place is within min_time_separation, none is a candidate
    again = session.localize(105.5, look(5), pose(5))
    assert again.localization is not None and again.matches == [] and again.added == (PLACES,)
    # 14.5 s after the last place nothing is recent: the revisit finds its place
    assert session.recent_places(106.0) == set(range(PLACES + 1)) and session.recent_places(120.0) == set()
    revisit = session.localize(120.0, look(0, shift=4), pose(0))
    assert revisit.matches[0].place_id == 0 and revisit.added == (PLACES + 1,)
    # what the node's ~/save_map writes: the places with their thumbnails and local features
    localizer.map.save(str(tmp_path / 'grown'))
    saved = VprMap.load(str(tmp_path / 'grown'))
    assert len(saved) == PLACES + 2 and saved.thumbnail(0) is not None
    assert len(saved.local_features.get(0).keypoints) > 50


def test_without_growing_or_thumbnails() -> None:
    localizer = empty_localizer()
    first_pass(session_on(localizer, thumbnails=False))
    assert localizer.map.thumbnail(0) is None
    fixed = session_on(localizer, grow=False)
    frame = fixed.localize(120.0, look(2, shift=4), pose(2))
    assert frame.matches[0].place_id == 2 and frame.added == () and not frame.keyframe
    assert len(localizer.map) == PLACES and fixed.places == []


def test_a_vocabulary_bootstraps_from_the_first_keyframes_before_anything_is_answered() -> None:
    localizer = empty_localizer({'pca_dim': 2})  # raw pixels + PCA: fitted on the map images
    session = session_on(localizer, bootstrap=VocabularyBootstrap(localizer, 3))
    session.keyframes.min_interval = 1.5  # the gate chooses the bootstrap keyframes too
    frames = [session.localize(100.0 + i, look(i), pose(i)) for i in range(5)]
    assert [f.localization is None for f in frames] == [True] * 5
    assert [f.keyframe for f in frames] == [True, False, True, False, True]
    assert [f.added for f in frames] == [(), (), (), (), (0, 1, 2)]  # at the third keyframe: fit, seed
    assert session.places == [(0, 100.0), (1, 102.0), (2, 104.0)] and not session.bootstrapping
    with pytest.raises(ValueError, match='not answered'):
        session.decide_loop(frames[0])
    answered = session.localize(120.0, look(2, shift=4), pose(2))
    assert answered.localization is not None and len(answered.matches) == 3


def test_a_revisit_is_verified_once_per_candidate_under_the_map_lock() -> None:
    lock = threading.Lock()
    localizer = empty_localizer()
    held: list[tuple[str, bool]] = []
    verifier = verification.for_map(localizer.map)
    store_get = verifier.place_features

    def place_features(place_id: int) -> lf.LocalFeatures:
        held.append(('features', lock.locked()))
        return store_get(place_id)

    verifier.place_features = place_features
    config = LoopClosureConfig(min_time_separation=SEPARATION_S, consistency_frames=1, verified_frames=1)
    session = IncrementalSession(localizer, LoopClosureFilter(config), KeyframeGate(min_interval=0.0),
                                 verifier, map_lock=lock)
    neighbours = localizer.time_neighbours

    def time_neighbours(place_id: int, score: float) -> list:
        held.append(('neighbours', lock.locked()))
        return neighbours(place_id, score)

    localizer.time_neighbours = time_neighbours  # type: ignore[method-assign]
    first_pass(session)
    extracted: list[int] = []
    extract = session.local_features_of

    def counted(rgb: np.ndarray) -> lf.LocalFeatures | None:
        extracted.append(1)
        return extract(rgb)

    session.local_features_of = counted  # type: ignore[method-assign]
    frame = session.localize(120.0, look(1, shift=4), pose(1))
    outcome = session.decide_loop(frame)
    decision = outcome.decision
    assert decision.status is LoopStatus.LOOP_DETECTED and decision.place_id == 1 and decision.checked
    assert decision.verification is not None and decision.verification.verified
    assert extracted == [1]  # the new place and its verification share one extraction
    assert held and all(locked for _, locked in held), held
    assert {kind for kind, _ in held} == {'features', 'neighbours'}
    # one timing per verified candidate; asked again, the frame's verifications are reused
    assert len(outcome.verify_ms) == len([k for k, _ in held if k == 'features'])
    assert outcome.verify is not None
    runs = len(outcome.verify_ms)
    assert outcome.verify(frame.matches[:1])[0].place_id == 1 and len(outcome.verify_ms) == runs
    # a second session on the same verifier and lock does not take the lock twice (it would deadlock)
    wrapped = verifier.place_features
    again = IncrementalSession(localizer, LoopClosureFilter(config), verifier=verifier, map_lock=lock,
                               grow=False)
    assert verifier.place_features is wrapped
    held.clear()
    assert again.decide_loop(again.localize(122.0, look(1, shift=4), pose(1))).decision.checked
    assert held and all(locked for _, locked in held)
    # verification off: retrieval and the temporal check only
    unverified = session.decide_loop(session.localize(121.0, look(1, shift=8), pose(1)), verify=False)
    assert unverified.verify is None and unverified.verify_ms == [] and not unverified.decision.checked
    assert unverified.decision.status is LoopStatus.LOOP_DETECTED and unverified.decision.place_id == 1


def test_a_held_frame_is_published_with_its_own_features_when_its_chain_confirms_it() -> None:
    """Two retrieval frames in a row make the streak, one verified view is enough: the first revisit frame
    is held, the second confirms it, and each closure comes with the local features of its own frame."""
    localizer = empty_localizer()
    config = LoopClosureConfig(min_time_separation=SEPARATION_S, consistency_frames=2, verified_frames=1)
    session = IncrementalSession(localizer, LoopClosureFilter(config), KeyframeGate(min_interval=0.0),
                                 verification.for_map(localizer.map))
    first_pass(session)
    first = session.localize(120.0, look(1, shift=4), pose(1))
    held = session.decide_loop(first)
    assert held.decision.status is LoopStatus.FAILED_TEMPORAL_CONSISTENCY and held.decision.held
    assert held.closures == () and session.loop_filter.held_stamps == {120.0}
    second = session.localize(121.0, look(1, shift=8), pose(1))
    confirmed = session.decide_loop(second)
    assert confirmed.decision.status is LoopStatus.LOOP_DETECTED
    assert [d.t_query for d in confirmed.decision.confirms] == [120.0]
    assert [(d.t_query, d.status, d.place_id) for d, _ in confirmed.closures] == [
        (120.0, LoopStatus.LOOP_DETECTED, 1), (121.0, LoopStatus.LOOP_DETECTED, 1)]
    (_, held_features), (_, own_features) = confirmed.closures
    assert held_features() is first.features() and own_features() is second.features()
    assert held_features() is not own_features()
    assert session.loop_filter.held_stamps == set()  # confirmed: nothing is held, nothing kept
    assert session._held_features == {}
    # a chain that never confirms: a frame verified on another place (ids and stamps outside the windows)
    # starts a new chain, and the features of the frame held on the old one are dropped with it
    for t, place in ((140.0, 5), (141.0, 0)):
        outcome = session.decide_loop(session.localize(t, look(place, shift=4), pose(place)))
        assert outcome.decision.held and outcome.decision.place_id == place and outcome.closures == ()
        assert session.loop_filter.held_stamps == {t} and set(session._held_features) == {t}


def test_the_bootstrap_keyframes_are_decided_for_loop_closure_once_the_vocabulary_exists() -> None:
    """A revisit among the bootstrap keyframes: nothing is answered before the fit, so the fit's frame
    carries the seeded keyframes as loop queries (time order), and the revisit among them closes."""
    localizer = empty_localizer({'pca_dim': 2})
    config = LoopClosureConfig(min_time_separation=SEPARATION_S, consistency_frames=1, verified_frames=1)
    session = IncrementalSession(localizer, LoopClosureFilter(config), KeyframeGate(min_interval=0.0),
                                 verification.for_map(localizer.map), VocabularyBootstrap(localizer, 3))
    frames = [session.localize(100.0, look(0), pose(0)), session.localize(106.0, look(2), pose(2)),
              session.localize(115.0, look(0, shift=4), pose(0))]
    assert [f.loop_queries for f in frames[:2]] == [(), ()]
    queries = frames[2].loop_queries
    assert [q.stamp for q in queries] == [100.0, 106.0, 115.0] and frames[2].localization is None
    # only places at least min_time_separation older are candidates: the revisit's first place
    assert [[m.place_id for m in q.matches] for q in queries] == [[], [], [0]]
    assert queries[2].features() is not None and len(queries[2].features().keypoints) > 50
    outcomes = [session.decide_loop(q) for q in queries]
    assert [o.decision.status for o in outcomes[:2]] == [LoopStatus.NO_MATCHES] * 2
    closed = outcomes[2].decision
    assert closed.status is LoopStatus.LOOP_DETECTED and closed.place_id == 0 and closed.checked
    assert [(d.t_query, f() is queries[2].features()) for d, f in outcomes[2].closures] == [(115.0, True)]
    # handed out once: the next frame is answered and is its own only query
    after = session.localize(116.0, look(2, shift=4), pose(2))
    assert after.localization is not None and [q.stamp for q in after.loop_queries] == [116.0]
    assert after.loop_queries[0].matches == after.matches

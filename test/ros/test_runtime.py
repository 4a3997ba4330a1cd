"""The keep-latest slot and rolling statistics behind the node's no-backlog processing."""
from __future__ import annotations

import threading

import pytest

from vpr_ros.ros.runtime import LatestSlot, RollingStats


def test_slot_keeps_only_the_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0) == 4 and slot.dropped == 4
    assert slot.take(timeout=0.01) is None
    slot.put(7)
    assert slot.take() == 7 and slot.dropped == 4


def test_slot_of_several_keeps_the_newest_in_order() -> None:
    slot: LatestSlot[int] = LatestSlot(capacity=3)
    for i in range(5):
        slot.put(i)
    assert [slot.take(timeout=0) for _ in range(4)] == [2, 3, 4, None] and slot.dropped == 2
    with pytest.raises(ValueError):
        LatestSlot(capacity=0)


def test_slot_wakes_a_waiting_worker_and_closes() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    worker.start()
    slot.put('frame')
    worker.join(timeout=5)
    assert got == ['frame']
    slot.put('late')
    slot.close()
    assert slot.take(timeout=5) is None


def test_rolling_stats() -> None:
    stats = RollingStats(size=3, window_s=2.0)
    for v in (100.0, 1.0, 2.0, 3.0):
        stats.add(v)
    assert stats.percentile(50) == 2.0  # the oldest sample left the window
    for t in (0.0, 0.5, 1.0, 1.5, 10.0, 10.1, 10.2):
        stats.tick(t)
    assert stats.rate(10.2) == pytest.approx(10.0)  # ticks older than 2 s no longer count
    assert stats.last_event_age(15.2) == pytest.approx(5.0)
    assert RollingStats().last_event_age() is None

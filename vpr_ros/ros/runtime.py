"""The node's no-backlog machinery, free of rclpy: keep-latest slots and rolling statistics.

The subscription callback only drops the message into a :class:`LatestSlot`; one worker thread
takes the newest message whenever it is free. A message replaced before the worker took it is a
dropped frame, so the node never processes stale images and never builds a queue. The loop-closure
stage behind it gets a slot of a few frames, taken in order, so a slow verification delays
closures without holding up localisation.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

import numpy as np

T = TypeVar('T')


class LatestSlot(Generic[T]):
    """A mailbox of the newest ``capacity`` items, taken oldest first: ``put`` on a full slot drops
    (and counts) the oldest item not yet taken. Capacity 1: the worker always gets the newest."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError('capacity must be >= 1')
        self._cond = threading.Condition()
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._items) == self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The oldest item kept, waiting for one; None on timeout or once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RollingStats:
    """Percentiles over the last ``size`` samples and an event rate over the last ``window_s`` seconds."""

    def __init__(self, size: int = 200, window_s: float = 5.0) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._events: deque[float] = deque()
        self._window_s = window_s
        self._last_event: float | None = None
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._events.append(now)
            self._last_event = now
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0] > self._window_s:
            self._events.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._events) < 2:
                return 0.0
            span = self._events[-1] - self._events[0]
            return (len(self._events) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float:
        with self._lock:
            if not self._samples:
                return float('nan')
            return float(np.percentile(np.fromiter(self._samples, np.float64), q))

    def last_event_age(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            return None if self._last_event is None else now - self._last_event


__all__ = ['LatestSlot', 'RollingStats']

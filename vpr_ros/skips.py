"""Counting and logging bad input once per kind (a logged, counted skip instead of a crash)."""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

logger = logging.getLogger('vpr_ros')


class SkipCounter:
    """Counts skipped inputs per kind; logs the first occurrence of each kind only."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self._log = log or logger.warning

    def skip(self, kind: str, detail: str = '') -> None:
        if not self.counts[kind]:
            self._log(f'skipping input ({kind}): {detail} (further ones of this kind are only counted)')
        self.counts[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)

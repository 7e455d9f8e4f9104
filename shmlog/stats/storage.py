"""Where a HistoryBuffer keeps its numbers.

HistoryBuffer talks to its storage through five calls (``append``,
``retained``, ``tail``, ``window`` and ``totals``) so the same statistics code
runs over a private ring in this process (:class:`LocalRing`) and over records
that other processes write into shared memory (``shmlog.stats.merged``).

Two facts shape the interface:

* Appending must cost the same at any history length, so storage is a ring that
  overwrites its oldest record once ``max_length`` records are retained.
* Global statistics must stay exact after the ring dropped old records, so
  every storage also keeps running totals over *every* update ever made.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np

_FIRST_ALLOCATION = 64


class Totals(NamedTuple):
    """Running totals over every update ever made, dropped records included."""

    updates: int
    value_sum: float
    count_sum: float
    minimum: float
    maximum: float

    @classmethod
    def empty(cls) -> Totals:
        return cls(0, 0.0, 0.0, math.inf, -math.inf)

    def add(self, value: float, count: float) -> Totals:
        return Totals(
            self.updates + 1,
            self.value_sum + value,
            self.count_sum + count,
            running_min(self.minimum, value),
            running_max(self.maximum, value),
        )

    @classmethod
    def of(cls, values: np.ndarray, counts: np.ndarray) -> Totals:
        if len(values) == 0:
            return cls.empty()
        return cls(
            len(values),
            float(values.sum()),
            float(counts.sum()),
            float(values.min()),
            float(values.max()),
        )

    def merge(self, other: Totals) -> Totals:
        return Totals(
            self.updates + other.updates,
            self.value_sum + other.value_sum,
            self.count_sum + other.count_sum,
            running_min(self.minimum, other.minimum),
            running_max(self.maximum, other.maximum),
        )


def running_min(current: float, value: float) -> float:
    # NaN is sticky, as with numpy's min over an array that holds one.
    return value if (value < current or value != value) else current  # noqa: PLR0124


def running_max(current: float, value: float) -> float:
    return value if (value > current or value != value) else current  # noqa: PLR0124


class HistoryStorage(Protocol):
    """What HistoryBuffer needs from its storage, and all other layers may call on it.

    Implemented by :class:`LocalRing` (one process) and
    :class:`shmlog.stats.merged.MergedRings` (every writer's ring of a key in
    shared memory, which adds ``per_writer``).
    """

    max_length: int

    def append(self, value: float, count: float) -> None: ...

    def retained(self) -> int: ...

    def tail(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The last ``n`` records, and whether all ``n`` are still retained."""
        ...

    def totals(self) -> Totals: ...


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class LocalRing:
    """A ring of (value, count) pairs in this process's memory.

    Arrays start small and double until they reach ``max_length``, so an
    empty buffer with the default max_length of 1,000,000 does not hold 16 MB.
    ``_written`` counts records stored in this ring; it differs from
    ``totals().updates`` when the ring was restored from a buffer whose totals
    cover records that were already dropped.
    """

    __slots__ = (
        "_counts",
        "_csum",
        "_max",
        "_min",
        "_n",
        "_sum",
        "_values",
        "_written",
        "max_length",
    )

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._values = np.empty(0, dtype=np.float64)
        self._counts = np.empty(0, dtype=np.float64)
        self._written = 0
        self._set_totals(Totals.empty())

    def _set_totals(self, totals: Totals) -> None:
        self._n, self._sum, self._csum, self._min, self._max = totals

    @classmethod
    def from_history(
        cls,
        values: np.ndarray,
        counts: np.ndarray,
        max_length: int,
        totals: Totals | None = None,
    ) -> LocalRing:
        """Build a ring holding ``values``/``counts`` (at most max_length of them).

        ``totals`` carries running totals that cover more than the records
        given (a restored or copied buffer); without it they are computed.
        """
        ring = cls(max_length)
        n = len(values)
        size = min(max(n, _FIRST_ALLOCATION), max_length)
        ring._values = np.empty(size, dtype=np.float64)
        ring._counts = np.empty(size, dtype=np.float64)
        ring._values[:n] = values
        ring._counts[:n] = counts
        ring._written = n
        ring._set_totals(totals if totals is not None else Totals.of(values, counts))
        return ring

    def append(self, value: float, count: float) -> None:
        written = self._written
        capacity = len(self._values)
        if written >= capacity:
            if capacity < self.max_length:
                self._grow(capacity)
                slot = written
            else:
                slot = written % capacity
        else:
            slot = written
        self._values[slot] = value
        self._counts[slot] = count
        self._written = written + 1
        # Plain attributes rather than a Totals per update: this is the hot path.
        self._n += 1
        self._sum += value
        self._csum += count
        if value < self._min or value != value:  # noqa: PLR0124 (NaN test without a call)
            self._min = value
        if value > self._max or value != value:  # noqa: PLR0124 (NaN test without a call)
            self._max = value

    def _grow(self, capacity: int) -> None:
        new = min(max(capacity * 2, _FIRST_ALLOCATION), self.max_length)
        values = np.empty(new, dtype=np.float64)
        counts = np.empty(new, dtype=np.float64)
        values[:capacity] = self._values
        counts[:capacity] = self._counts
        self._values, self._counts = values, counts

    def retained(self) -> int:
        return min(self._written, len(self._values))

    def tail(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        written = self._written
        capacity = len(self._values)
        kept = min(written, capacity)
        n = kept if n is None else min(n, kept)
        if written <= capacity:
            start = kept - n
            return _readonly(self._values[start:kept]), _readonly(self._counts[start:kept])
        start = (written - n) % capacity
        stop = start + n
        if stop <= capacity:
            return _readonly(self._values[start:stop]), _readonly(self._counts[start:stop])
        values = np.concatenate((self._values[start:], self._values[: stop - capacity]))
        counts = np.concatenate((self._counts[start:], self._counts[: stop - capacity]))
        return values, counts

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
        values, counts = self.tail(n)
        return values, counts, len(values) >= n

    def totals(self) -> Totals:
        return Totals(self._n, self._sum, self._csum, self._min, self._max)

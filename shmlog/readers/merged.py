"""HistoryBuffer storage over every writer's ring of one key.

Readers see one history per key, as MMEngine's single-process hub would have
recorded it: the records of all writers merged in time order (each record
carries its CLOCK_MONOTONIC time), with totals summed across writers.

A window of the last ``n`` updates only needs each ring's last ``n``
records, so a statistic costs the same whatever the history length.  When a
ring has dropped old records, the merged history is only complete back to the
oldest record that ring still holds; ``retained`` reports that depth, which
is how HistoryBuffer knows when a window reaches past what is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..shm.ring import RingReader
from .storage import Totals


class MergedRings:
    """A read view (plus an append hook) over the rings of one key."""

    def __init__(
        self,
        rings: list[RingReader],
        append: Callable[[float, float], None] | None = None,
        labels: Callable[[], dict[int, str]] | None = None,
    ) -> None:
        self._rings = rings
        self._append = append
        # A callable: reading every writer's label costs more than a statistic,
        # so it is only done when a per-writer breakdown is asked for.
        self._labels = labels
        self.max_length = sum(r.capacity for r in rings)

    def append(self, value: float, count: float) -> None:
        if self._append is None:
            raise TypeError("this history is a read-only view; update it through its MessageHub")
        self._append(value, count)

    def totals(self) -> Totals:
        result = Totals.empty()
        for ring in self._rings:
            result = result.merge(Totals(*ring.totals()))
        return result

    def retained(self) -> int:
        # Consistent copies, not the live slots: a writer that keeps appending
        # overwrites the oldest records (and their times) while they are read.
        snaps = [ring.snapshot(None) for ring in self._rings]
        cutoff = None
        for snap in snaps:
            if snap.updates > len(snap.times):  # this ring has dropped records
                oldest = int(snap.times[0]) if len(snap.times) else None
                if oldest is not None:
                    cutoff = oldest if cutoff is None else max(cutoff, oldest)
        if cutoff is None:
            return sum(len(snap.times) for snap in snaps)
        return sum(
            len(snap.times) - int(np.searchsorted(snap.times, cutoff)) for snap in snaps
        )

    def tail(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        snaps = [ring.snapshot(n) for ring in self._rings]
        snaps = [s for s in snaps if len(s.values)]
        if not snaps:
            empty = np.empty(0, dtype=np.float64)
            return empty, empty
        if len(snaps) == 1:
            values, counts = snaps[0].values, snaps[0].counts
        else:
            times = np.concatenate([s.times for s in snaps])
            order = np.argsort(times, kind="stable")
            values = np.concatenate([s.values for s in snaps])[order]
            counts = np.concatenate([s.counts for s in snaps])[order]
        if n is not None and len(values) > n:
            values, counts = values[-n:], counts[-n:]
        return values, counts

    def per_writer(self) -> dict[str, MergedRings]:
        split: dict[str, MergedRings] = {}
        labels = self._labels() if self._labels is not None else {}
        for ring in self._rings:
            label = labels.get(ring.writer, f"writer{ring.writer}")
            split[label] = MergedRings([ring], None, self._labels)
        return split

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

import math
from collections.abc import Callable

import numpy as np

from ..shm.scalar_rings import RingReader, RingSnapshot
from .storage import Totals

_EMPTY_F = np.empty(0, dtype=np.float64)
_EMPTY_I = np.empty(0, dtype=np.int64)


class MergedRings:
    """A read view (plus an append hook) over the rings of one key."""

    def __init__(
        self,
        rings: list[RingReader],
        append: Callable[[float, float], None] | None = None,
        labels: Callable[[], dict[int, str]] | None = None,
        until: int | None = None,
        every: list[RingReader] | None = None,
    ) -> None:
        self._rings = rings
        # Every writer's ring of the key, for per_writer(); the statistics
        # merge ``rings``, those of the reader's scope (shmlog.stats.shared_hub).
        self._every = rings if every is None else every
        self._append = append
        # With ``until`` (a CLOCK_MONOTONIC time in ns) the view shows the
        # history as it was at that moment: what the log writer needs to
        # format a line for a step the training loop has already passed.
        self._until = until
        # A callable: reading every writer's label costs more than a statistic,
        # so it is only done when a per-writer breakdown is asked for.
        self._labels = labels
        self.max_length = sum(r.capacity for r in rings)

    def append(self, value: float, count: float) -> None:
        if self._append is None:
            raise TypeError("this history is a read-only view; update it through its MessageHub")
        self._append(value, count)

    def _snapshot(self, ring: RingReader, last: int | None):
        if self._until is None:
            return ring.snapshot(last)
        return snapshot_until(ring, last, self._until)

    def totals(self) -> Totals:
        result = Totals.empty()
        for ring in self._rings:
            if self._until is None:
                result = result.merge(Totals(*ring.totals()))
            else:
                snap = snapshot_until(ring, None, self._until)
                result = result.merge(Totals(*snap[:5]))
        return result

    def retained(self) -> int:
        if self._until is None:
            kept = [(ring.kept(n), n) for ring, n in ((r, r.updates()) for r in self._rings)]
            if all(k == n for k, n in kept):
                return sum(k for k, _ in kept)  # nothing dropped: no copy needed
        # Consistent copies, not the live slots: a writer that keeps appending
        # overwrites the oldest records (and their times) while they are read.
        snaps = [self._snapshot(ring, None) for ring in self._rings]
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
        values, counts, _ = self.records(n)
        return values, counts

    def records(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, counts, CLOCK_MONOTONIC times) of the newest ``n`` merged records."""
        return self._merge([self._snapshot(ring, n) for ring in self._rings], n)

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The last ``n`` merged records, reading only each ring's last ``n``.

        They are complete unless a ring that dropped records holds none as
        old as the window's oldest record: its dropped ones may belong in it.
        """
        snaps = [self._snapshot(ring, n) for ring in self._rings]
        values, counts, times = self._merge(snaps, n)
        start = int(times[0]) if len(times) else 0
        complete = len(values) >= n and not any(
            snap.updates > len(snap.times) and len(snap.times) < n
            and len(snap.times) and start < snap.times[0]
            for snap in snaps
        )
        return values, counts, complete

    @staticmethod
    def _merge(snaps: list, n: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``n`` records of all snapshots in time order, with their times."""
        snaps = [s for s in snaps if len(s.values)]
        if not snaps:
            return _EMPTY_F, _EMPTY_F, _EMPTY_I
        if len(snaps) == 1:
            values, counts, times = snaps[0].values, snaps[0].counts, snaps[0].times
        else:
            times = np.concatenate([s.times for s in snaps])
            order = np.argsort(times, kind="stable")
            values = np.concatenate([s.values for s in snaps])[order]
            counts = np.concatenate([s.counts for s in snaps])[order]
            times = times[order]
        if n is not None and len(values) > n:
            values, counts, times = values[-n:], counts[-n:], times[-n:]
        return values, counts, times

    def per_writer(self) -> dict[str, MergedRings]:
        split: dict[str, MergedRings] = {}
        labels = self._labels() if self._labels is not None else {}
        for ring in self._every:
            label = labels.get(ring.slot, f"writer{ring.slot}")
            split[label] = MergedRings([ring], None, self._labels, self._until)
        return split


def snapshot_until(ring: RingReader, last: int | None, until: int) -> RingSnapshot:
    """``ring.snapshot(last)`` as the ring was when the clock read ``until``.

    Records stamped after ``until`` are left out of the records and of
    the totals.  When every record up to ``until`` is still retained the
    totals are recomputed from them, adding in order as the writer did, so
    they equal what the writer's running totals were; otherwise the later
    records' sums are subtracted (and min/max recomputed from the retained
    records if a later record set them).
    """
    want = ring.capacity if last is None else min(ring.capacity, last)
    extra = 16
    while True:
        copy = min(ring.capacity, want + extra)
        snap = ring.snapshot(copy)
        later = int(len(snap.times) - np.searchsorted(snap.times, until, side="right"))
        # Enough when the copy holds ``want`` records up to ``until`` (and so
        # every later one), or everything the ring retains.
        everything = len(snap.values) >= ring.kept(snap.updates) or copy >= ring.capacity
        if len(snap.values) - later >= max(want, 1) or everything:
            break
        extra = max(extra * 4, later + 16)
    if later == 0:
        values, counts, times = snap.values, snap.counts, snap.times
        return snap._replace(values=values[len(values) - min(want, len(values)):],
                             counts=counts[len(counts) - min(want, len(counts)):],
                             times=times[len(times) - min(want, len(times)):])
    cut = len(snap.values) - later
    gone_values, gone_counts = snap.values[cut:], snap.counts[cut:]
    values, counts, times = snap.values[:cut], snap.counts[:cut], snap.times[:cut]
    keep = min(want, len(values))
    if snap.updates - later == len(values):
        if not len(values):
            return RingSnapshot(0, 0.0, 0.0, math.inf, -math.inf, values, counts, times)
        # np.cumsum adds left to right, like the writer's running sum.
        return RingSnapshot(
            len(values), float(np.cumsum(values)[-1]), float(np.cumsum(counts)[-1]),
            float(values.min()), float(values.max()),
            values[len(values) - keep:], counts[len(counts) - keep:], times[len(times) - keep:],
        )
    low, high = snap.minimum, snap.maximum
    if len(values) and (np.any(gone_values <= low) or np.isnan(gone_values).any()):
        low = float(values.min())
    if len(values) and (np.any(gone_values >= high) or np.isnan(gone_values).any()):
        high = float(values.max())
    return RingSnapshot(
        snap.updates - later,
        snap.value_sum - float(gone_values.sum()),
        snap.count_sum - float(gone_counts.sum()),
        low, high,
        values[len(values) - keep:], counts[len(counts) - keep:], times[len(times) - keep:],
    )

"""When ``shmlog top`` shows a writer as exited: not at once, since its label may come back.

DataLoader workers that are not persistent exit at the end of each epoch;
their successors, with the same labels, take over their slots when the next
epoch starts.  A writer shown as exited in between would flicker at every
epoch boundary, so an ended writer counts as exited only once its label has
had no live writer for a grace period.
"""

from __future__ import annotations

# Seconds a label may go without a live writer before its ended writers show as
# exited: DataLoader workers that are not persistent exit at each epoch's end
# and their successors, with the same labels, start with the next epoch.
EXIT_GRACE = 5.0


def exit_pending(
    writers: list[tuple[str, str, bool]], last_live: dict[str, int], now: int, grace_ns: int
) -> frozenset[str]:
    """The ended writers not to show as exited yet; ``last_live`` is updated.

    ``writers``: (label, label as shown, alive) per slot; ``last_live``: label
    -> the CLOCK_MONOTONIC time it last had a live writer, kept between
    refreshes; ``now`` on the same clock.  An ended writer is pending while
    a writer of its label lives (its successor, in another slot) or while
    its label had a live writer less than ``grace_ns`` ago.  A label never
    seen alive by this reader counts as exited at once.
    """
    for label, _shown, alive in writers:
        if alive:
            last_live[label] = now
    return frozenset(
        shown for label, shown, alive in writers
        if not alive and label in last_live and now - last_live[label] < grace_ns
    )


def check_grace(seconds: float) -> float:
    """``seconds`` as an exit grace, else ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"exit_grace: expected seconds >= 0, got {seconds!r}")
    return float(seconds)

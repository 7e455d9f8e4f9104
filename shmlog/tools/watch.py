"""Sampling a running session for ``shmlog top``, without changing it.

Everything a live view needs is already in the session's shared memory: each
writer's ring holds its newest records and running totals, and runtime info
holds the iteration and eta.  So the view reads them where they are and asks
the job for nothing.  It maps the segments without joining: it is never a
member (watching a job cannot keep a finished session alive), never claims a
writer slot and never stores a byte into the session.

Statistics are the ones LogProcessor would compute: a HistoryBuffer over the
merged rings of each key (``shmlog.stats``), and over each ring alone for the
per-writer rows.  Update rates come from the ring totals: the change of each
ring's update count between two refreshes, over the time between them.  A
ring seen for the first time (every ring, on the first frame) has no earlier
count, so its rate is estimated from the timestamps of its newest records.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import posix_ipc

from ..format.progress import eta_of
from ..shm import codec
from ..shm.control import STATE_CLOSED, Control
from ..shm.inspect import list_sessions
from ..shm.ring import RingReader
from ..shm.segment import SegmentError
from ..shm.session import SessionError, SessionSegments, check_name
from ..stats.history_buffer import HistoryBuffer
from ..stats.merged import MergedRings
from ..wire import PROGRESS_INFO_KEYS, PROGRESS_KEY, hub_key, split_hub_key

# Records per ring used to estimate a rate before a second refresh exists.
_RATE_RECORDS = 10


class SessionGone(Exception):
    """The watched session was closed, or every process that joined it exited."""


def choose_session(name: str | None) -> str:
    """``name`` checked, or the only live session of this user."""
    if name is not None:
        return check_name(name)
    sessions = list_sessions()
    alive = [s.name for s in sessions if s.status == "alive"]
    if len(alive) == 1:
        return alive[0]
    if not alive:
        others = f" ({len(sessions)} not alive; 'shmlog ls' shows them)" if sessions else ""
        raise SessionError(f"no live shmlog session for uid {os.getuid()}{others}")
    raise SessionError(
        f"{len(alive)} live shmlog sessions: {', '.join(alive)}; name the one to watch: "
        f"shmlog top <session>"
    )


def _problem(control: Control, name: str) -> str | None:
    """Why the session can no longer be watched, or None while it is alive."""
    if control.read_state().state == STATE_CLOSED:
        return f"shmlog session {name!r} was closed"
    if not control.live_members():
        return (
            f"shmlog session {name!r} is stale: every process that joined it has exited "
            f"('shmlog clean' removes it)"
        )
    return None


def attach_readonly(name: str) -> SessionSegments:
    """Map session ``name`` for reading only: no member, no writer slot, no store."""
    try:
        segments = SessionSegments.attach_readonly(check_name(name))
    except posix_ipc.ExistentialError:
        raise SessionError(
            f"no shmlog session named {name!r} exists for uid {os.getuid()} (it was "
            f"closed, or never created); 'shmlog ls' lists the sessions"
        ) from None
    except (SegmentError, OSError) as exc:
        raise SessionError(f"cannot read shmlog session {name!r}: {exc}") from None
    # A control segment appears whole (see Segment.create): ready or closed.
    if segments.control.read_state().state == STATE_CLOSED:
        problem: str | None = f"shmlog session {name!r} is closing"
    else:
        problem = _problem(segments.control, name)
    if problem is not None:
        segments.close()
        raise SessionError(problem)
    return segments


@dataclass
class WriterStat:
    """One writer's ring of one key."""

    label: str
    alive: bool
    updates: int
    current: float | None
    mean: float | None
    last_ns: int | None  # CLOCK_MONOTONIC time of the newest record
    rate: float | None


@dataclass
class KeyStat:
    """One scalar key of one hub, over all its writers."""

    hub: str
    key: str
    updates: int
    current: float | None
    mean: float | None
    last_ns: int | None
    rate: float | None
    writers: list[WriterStat] = field(default_factory=list)


@dataclass
class Sample:
    """What one refresh read from the session."""

    session: str
    window: int
    taken_ns: int  # CLOCK_MONOTONIC, the clock of the ring records
    wall: float
    members: int
    writers_alive: int
    writers_total: int
    keys: list[KeyStat]
    progress: dict[str, dict[str, Any]]  # hub -> {PROGRESS_INFO_KEYS entry: value}


def _statistics(storage: MergedRings, key: str, window: int) -> tuple:
    """(updates, current, window mean, newest time) as a HistoryBuffer computes them."""
    buffer = HistoryBuffer._over(storage, key)
    updates = buffer.totals().updates
    if updates == 0:
        return 0, None, None, None
    _values, _counts, times = storage.records(1)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # A window longer than a small ring retains: the view shows what is kept.
        warnings.simplefilter("ignore")
        mean = float(buffer.mean(window))
    return updates, float(buffer.current()), mean, int(times[-1])


class Watcher:
    """Reads a session for ``shmlog top`` and remembers ring totals between refreshes."""

    def __init__(self, session: SessionSegments, window: int = 10) -> None:
        if window < 1:
            raise ValueError(f"window: expected an int >= 1, got {window!r}")
        self.session = session
        self.window = window
        # (full key, writer slot) -> (updates, time) at the previous refresh.
        self._previous: dict[tuple[str, int], tuple[int, int]] = {}

    @classmethod
    def open(cls, name: str, window: int = 10) -> Watcher:
        return cls(attach_readonly(name), window)

    @property
    def name(self) -> str:
        return self.session.name

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Watcher:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """Raise SessionGone when the session closed or all its processes exited."""
        problem = _problem(self.session.control, self.name)
        if problem is not None:
            raise SessionGone(problem)

    def sample(self) -> Sample:
        """Read every key, writer and progress value once."""
        self.check()
        try:
            return self._sample()
        except (SessionError, SegmentError, posix_ipc.Error, OSError):
            # Segments vanish when the session is removed while being read.
            self.check()
            raise

    def _sample(self) -> Sample:
        session = self.session
        now = time.monotonic_ns()
        writers = session.writers()
        alive = {w.slot: w.alive() for w in writers}
        labels = session.writer_labels()
        keys: list[KeyStat] = []
        seen: dict[tuple[str, int], tuple[int, int]] = {}
        for full in session.scalar_keys():
            hub, key = split_hub_key(full)
            rings = session.readers(full)
            keys.append(self._key_stat(hub, key, full, rings, labels, alive, now, seen))
        keys.sort(key=lambda k: (k.hub, k.key))
        self._previous = seen
        return Sample(
            session=self.name,
            window=self.window,
            taken_ns=now,
            wall=time.time(),
            members=len(session.control.live_members()),
            writers_alive=sum(alive.values()),
            writers_total=len(writers),
            keys=keys,
            progress=self._progress(keys),
        )

    def _key_stat(
        self,
        hub: str,
        key: str,
        full: str,
        rings: list[RingReader],
        labels: dict[int, str],
        alive: dict[int, bool],
        now: int,
        seen: dict[tuple[str, int], tuple[int, int]],
    ) -> KeyStat:
        per_writer: list[WriterStat] = []
        for ring in rings:
            storage = MergedRings([ring])
            updates, current, mean, last = _statistics(storage, key, self.window)
            _values, _counts, times = storage.records(_RATE_RECORDS)
            rate = self._rate((full, ring.writer), updates, times, now)
            seen[(full, ring.writer)] = (updates, now)
            per_writer.append(WriterStat(
                label=labels.get(ring.writer, f"writer{ring.writer}"),
                alive=alive.get(ring.writer, False), updates=updates, current=current,
                mean=mean, last_ns=last, rate=rate,
            ))
        updates, current, mean, last = _statistics(MergedRings(rings), key, self.window)
        rate: float | None = 0.0
        for w in per_writer:
            rate = None if rate is None or w.rate is None else rate + w.rate
        per_writer.sort(key=lambda w: w.label)
        return KeyStat(hub, key, updates, current, mean, last, rate, per_writer)

    def _rate(self, ident: tuple[str, int], n: int, times: np.ndarray, now: int) -> float | None:
        previous = self._previous.get(ident)
        if previous is not None and now > previous[1]:
            return max(0, n - previous[0]) / ((now - previous[1]) / 1e9)
        # No earlier count: the newest records' spacing, decaying while the
        # writer is silent (the span runs up to now, not to the last record).
        if n == 0:
            return 0.0
        if len(times) < 2 or now <= times[0]:
            return None
        return (len(times) - 1) / ((now - int(times[0])) / 1e9)

    def _progress(self, keys: list[KeyStat]) -> dict[str, dict[str, Any]]:
        """PROGRESS_INFO_KEYS values per hub, completed from ``shmlog.report_progress``.

        A hub's own ``iter`` (etc.) info wins over the ``progress`` dict that
        ``report_progress`` stores at each logging step, being more recent.
        Without an ``eta`` value the eta is the log writer's (MMEngine's rule,
        ``shmlog.format.progress.eta_of``) from the hub's ``train/time``.
        """
        found: dict[str, dict[str, Any]] = {}
        for full in self.session.info_keys():
            hub, key = split_hub_key(full)
            if key not in PROGRESS_INFO_KEYS and key != PROGRESS_KEY:
                continue
            raw = self.session.info_get(full)
            if raw is None:
                continue
            try:
                value = codec.decode(raw)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
                continue  # not plain data: nothing a progress line can show
            found.setdefault(hub, {})[key] = value
        times = {k.hub: HistoryBuffer._over(MergedRings(self.session.readers(hub_key(k.hub, k.key))))
                 for k in keys if k.key == "train/time" and k.updates}
        progress: dict[str, dict[str, Any]] = {}
        for hub, values in found.items():
            reported = values.pop(PROGRESS_KEY, None)
            if isinstance(reported, dict):
                for name in PROGRESS_INFO_KEYS:
                    if reported.get(name) is not None:
                        values.setdefault(name, reported[name])
            history = times.get(hub)
            if "eta" not in values and history is not None:
                try:
                    eta = eta_of(history, values["iter"], values["max_iters"])
                except (KeyError, TypeError, ValueError):
                    eta = math.nan
                if math.isfinite(eta):
                    values["eta"] = eta
            if values:
                progress[hub] = values
        return progress

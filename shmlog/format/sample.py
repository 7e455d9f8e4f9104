"""Sampling a running session from outside, without changing it.

``shmlog top`` (its frames and its JSON) and the metrics endpoint
(``shmlog serve``, or the log writer's with ``metrics_port``) all show what
one :class:`Sampler` reads: everything is already in the session's shared
memory.  Each writer's ring holds its newest records and running totals,
runtime info holds the iteration and eta, the record rings count the log
records they dropped.  So the sampler reads them where they are and asks the
job for nothing.  It maps the segments without joining: it is never a
member (watching a job cannot keep a finished session alive), never claims
a slot and never stores a byte into the session.

Statistics are the ones LogProcessor would compute: a HistoryBuffer over the
merged rings of each key (``shmlog.stats``), and over each ring alone for the
per-writer rows.  Update rates come from the ring totals: the change of each
ring's update count between two refreshes, over the time between them.  A
ring seen for the first time (every ring, on the first frame) has no earlier
count, so its rate is estimated from the timestamps of its newest records.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import posix_ipc

from ..errors import SegmentError, SessionError, SessionGone
from ..shm import codec
from ..shm.scalar_rings import RingReader
from ..shm.session import SessionSegments
from ..stats.history_buffer import HistoryBuffer
from ..stats.merged import MergedRings
from ..stats.storage import Totals
from ..wire import PROGRESS_INFO_KEYS, PROGRESS_KEY, hub_key, split_hub_key
from .presence import EXIT_GRACE, check_grace, exit_pending
from .progress import eta_of
from .watching import attach_readonly, watch_problem

# Records per ring used to estimate a rate before a second refresh exists.
_RATE_RECORDS = 10


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
    # Over every update ever made (HistoryBuffer.totals): exact after the ring wrapped.
    totals: Totals = field(default_factory=Totals.empty)


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
    totals: Totals = field(default_factory=Totals.empty)


@dataclass
class LogRingStat:
    """One process's log record ring."""

    label: str  # of the slot that owns it
    alive: bool
    dropped: int  # records refused because the ring stayed full, ever
    backlog: int  # bytes put but not yet written by the log writer


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
    writer_states: dict[str, bool] = field(default_factory=dict)  # label -> alive
    # hub -> the mode its progress "epoch" counts in ('train': runner.epoch during
    # training, as RuntimeInfoHook's info; else the reported mode): see shown_epoch.
    epoch_modes: dict[str, str] = field(default_factory=dict)
    # Labels (as shown) of ended writers not yet counted as exited: their label
    # has a live writer, or had one less than the exit grace ago (exit_pending).
    exit_pending: frozenset[str] = frozenset()
    log_rings: list[LogRingStat] = field(default_factory=list)
    read_seconds: float = 0.0  # how long reading the session took

    @property
    def dropped_log_records(self) -> int:
        return sum(ring.dropped for ring in self.log_rings)


def _statistics(storage: MergedRings, key: str, window: int) -> tuple:
    """(totals, current, window mean, newest time) as a HistoryBuffer computes them."""
    buffer = HistoryBuffer.over(storage, key)
    totals = buffer.totals()
    if totals.updates == 0:
        return totals, None, None, None
    _values, _counts, times = storage.records(1)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        # A window longer than a small ring retains: the view shows what is kept.
        warnings.simplefilter("ignore")
        mean = float(buffer.mean(window))
    return totals, float(buffer.current()), mean, int(times[-1])


def _key_totals(
    hub: str, key: str, rings: list[RingReader], labels: dict[int, str], alive: dict[int, bool]
) -> KeyStat:
    """A key's totals and newest values, per writer and merged, one ring snapshot each.

    The same numbers a HistoryBuffer over the rings gives (``totals()``,
    ``current()``), without its windows.
    """
    per_writer: list[WriterStat] = []
    merged = Totals.empty()
    current = last = None
    for ring in rings:
        snap = ring.snapshot(1)
        totals = Totals(*snap[:5])
        merged = merged.merge(totals)
        value = float(snap.values[-1]) if len(snap.values) else None
        at = int(snap.times[-1]) if len(snap.times) else None
        if at is not None and (last is None or at >= last):
            current, last = value, at
        per_writer.append(WriterStat(
            label=labels.get(ring.slot, f"writer{ring.slot}"),
            alive=alive.get(ring.slot, False), updates=totals.updates, current=value,
            mean=None, last_ns=at, rate=None, totals=totals,
        ))
    per_writer.sort(key=lambda w: w.label)
    return KeyStat(hub, key, merged.updates, current, None, last, None, per_writer, merged)


class Sampler:
    """Reads a session from outside and remembers ring totals between refreshes.

    ``require_members``: the session counts as gone once its members all
    left (``shmlog top``, ``shmlog serve``); without it, only once it closed
    (the log writer's own endpoint, which serves while the writer writes).

    ``windows``: window means and update rates, as ``shmlog top`` shows
    them.  Without, ``mean`` and ``rate`` are None and each ring is read
    once, one consistent copy of its totals and newest record: all a
    metrics scrape shows, at a fraction of the cost.
    """

    def __init__(self, session: SessionSegments, window: int = 10,
                 require_members: bool = True, windows: bool = True,
                 exit_grace: float = EXIT_GRACE) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window: expected an int >= 1, got {window!r}")
        self.session = session
        self.window = window
        self.require_members = require_members
        self.windows = windows
        self.exit_grace = check_grace(exit_grace)
        # label -> CLOCK_MONOTONIC time it last had a live writer (exit_pending).
        self._last_live: dict[str, int] = {}
        # (full key, slot) -> (updates, time) at the previous refresh.
        self._previous: dict[tuple[str, int], tuple[int, int]] = {}

    @classmethod
    def open(cls, name: str, window: int = 10, require_members: bool = True,
             windows: bool = True, exit_grace: float = EXIT_GRACE) -> Sampler:
        check_grace(exit_grace)  # before attaching
        return cls(attach_readonly(name, require_members), window, require_members, windows,
                   exit_grace)

    @property
    def name(self) -> str:
        return self.session.name

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Sampler:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def problem(self) -> str | None:
        """Why the session is gone (closed, or every process that joined it exited), or None."""
        return watch_problem(self.session.control, self.name, self.require_members)

    def check(self) -> None:
        """Raise SessionGone when the session is gone (see :meth:`problem`)."""
        problem = self.problem()
        if problem is not None:
            raise SessionGone(problem)

    def sample(self) -> Sample:
        """Read every key, writer, log ring and progress value once."""
        self.check()
        try:
            return self._sample()
        except (SessionError, SegmentError, posix_ipc.Error, OSError):
            # Segments vanish when the session is removed while being read.
            self.check()
            raise

    def _sample(self) -> Sample:
        started = time.perf_counter()
        session = self.session
        now, wall = time.monotonic_ns(), time.time()  # one moment on both clocks
        writers = session.slots()
        sees = session.control.sees_members()  # else every slot counts as alive
        alive = {w.slot: not sees or w.alive() for w in writers}
        labels = session.slot_labels(writers)
        keys: list[KeyStat] = []
        seen: dict[tuple[str, int], tuple[int, int]] = {}
        for full in session.scalar_keys():
            hub, key = split_hub_key(full)
            rings = session.readers(full)
            if self.windows:
                keys.append(self._key_stat(hub, key, full, rings, labels, alive, now, seen))
            else:
                keys.append(_key_totals(hub, key, rings, labels, alive))
        keys.sort(key=lambda k: (k.hub, k.key))
        self._previous = seen
        log_rings = [
            LogRingStat(labels.get(ring.slot, f"writer{ring.slot}"),
                        alive.get(ring.slot, False), ring.dropped(), max(0, ring.pending()))
            for ring in session.record_consumers()
        ]
        log_rings.sort(key=lambda r: r.label)
        progress, epoch_modes = self._progress(keys)
        return Sample(
            session=self.name,
            window=self.window,
            taken_ns=now,
            wall=wall,
            members=len(session.control.live_members()),
            writers_alive=sum(alive.values()),
            writers_total=len(writers),
            keys=keys,
            progress=progress,
            writer_states={labels.get(w.slot, f"writer{w.slot}"): alive[w.slot] for w in writers},
            epoch_modes=epoch_modes,
            exit_pending=exit_pending(
                [(w.label or labels[w.slot], labels[w.slot], alive[w.slot]) for w in writers],
                self._last_live, now, int(self.exit_grace * 1e9)),
            log_rings=log_rings,
            read_seconds=time.perf_counter() - started,
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
            totals, current, mean, last = _statistics(storage, key, self.window)
            _values, _counts, times = storage.records(_RATE_RECORDS)
            rate = self._rate((full, ring.slot), totals.updates, times, now)
            seen[(full, ring.slot)] = (totals.updates, now)
            per_writer.append(WriterStat(
                label=labels.get(ring.slot, f"writer{ring.slot}"),
                alive=alive.get(ring.slot, False), updates=totals.updates, current=current,
                mean=mean, last_ns=last, rate=rate, totals=totals,
            ))
        totals, current, mean, last = _statistics(MergedRings(rings), key, self.window)
        rate: float | None = 0.0
        for w in per_writer:
            rate = None if rate is None or w.rate is None else rate + w.rate
        per_writer.sort(key=lambda w: w.label)
        return KeyStat(hub, key, totals.updates, current, mean, last, rate, per_writer, totals)

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

    def _progress(
        self, keys: list[KeyStat]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """PROGRESS_INFO_KEYS values per hub, completed from ``shmlog.report_progress``.

        Also, per hub with an ``epoch``, the mode that epoch counts in
        (``shmlog.format.progress.shown_epoch``): a hub's own ``epoch`` info
        is MMEngine's training counter; a reported one counts in its mode.

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
        times = {k.hub: HistoryBuffer.over(MergedRings(self.session.readers(hub_key(k.hub, k.key))))
                 for k in keys if k.key == "train/time" and k.updates}
        progress: dict[str, dict[str, Any]] = {}
        modes: dict[str, str] = {}
        for hub, values in found.items():
            reported = values.pop(PROGRESS_KEY, None)
            if "epoch" in values:
                modes[hub] = "train"
            elif isinstance(reported, dict) and reported.get("epoch") is not None:
                modes[hub] = str(reported.get("mode", "train"))
            if isinstance(reported, dict):
                for name in PROGRESS_INFO_KEYS:
                    if reported.get(name) is not None:
                        values.setdefault(name, reported[name])
                # Every node's workers, exchanged with the job-wide statistics.
                workers = (reported.get("reduced") or {}).get("workers")
                if workers:
                    values["job_workers"] = dict(workers)
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
        return progress, {hub: mode for hub, mode in modes.items() if hub in progress}

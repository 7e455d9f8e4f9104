"""``shmlog top``: a live view of a running session, from another terminal.

Everything such a view needs is already in the session's shared memory: each
writer's ring holds its newest records and running totals, and runtime info
holds the iteration and eta.  So the view reads them where they are and asks
the job for nothing.  It attaches the way ``shmlog ls`` does, mapping the
segments without joining: it is never a member (watching a job cannot keep a
finished session alive), never claims a writer slot and never stores a byte
into the session, so looking at a job cannot change it.

Update rates come from the ring totals: the change of each ring's update count
between two refreshes, over the time between them.  A ring seen for the first
time (every ring, on the first frame) has no earlier count, so its rate is
estimated from the timestamps of its newest records instead.

Sampling (:class:`Watcher`) is separate from rendering (:func:`render`, which
turns a :class:`Sample` into plain text lines) and from showing the lines:
curses for an interactive terminal, ANSI cursor movement where curses is not
available, plain frames for ``--once``, ``--frames`` and pipes.
"""

from __future__ import annotations

import datetime
import math
import os
import pickle
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import posix_ipc

from ..api.shared_hub import SEPARATOR
from ..shm import codec
from ..shm.control import STATE_CLOSED, Control
from ..shm.inspect import list_sessions
from ..shm.ring import RingReader
from ..shm.segment import KIND_CONTROL, Segment, SegmentError
from ..shm.session import Session, SessionError, check_name, prefix

__all__ = [
    "FRAME_SEPARATOR",
    "PROGRESS_KEYS",
    "REPORTED_KEY",
    "Frame",
    "KeyStat",
    "Sample",
    "SessionGone",
    "Watcher",
    "WriterStat",
    "attach_readonly",
    "choose_session",
    "format_eta",
    "render",
    "run",
]

# Runtime info keys (of any hub) shown on the progress line.
PROGRESS_KEYS = ("iter", "max_iters", "epoch", "max_epochs", "eta")
# The runtime info dict ``shmlog.report_progress`` stores (iter, epoch, ...).
REPORTED_KEY = "progress"
# Written between two plain-text frames (``--frames``, pipes).
FRAME_SEPARATOR = "\f\n"
# Records per ring used to estimate a rate before a second refresh exists.
_RATE_RECORDS = 10


class SessionGone(Exception):
    """The watched session was closed, or every process that joined it exited."""


# -- attaching -------------------------------------------------------------------------


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


def attach_readonly(name: str) -> Session:
    """Map session ``name`` for reading only: no member, no writer slot, no store.

    ``Session.open`` would take the session lock and prune dead members;
    reading needs neither, so this builds the handle from the control segment
    directly.
    """
    check_name(name)
    ctl_name = "/" + prefix(name) + "ctl"
    try:
        segment = Segment.attach(ctl_name, KIND_CONTROL)
    except posix_ipc.ExistentialError:
        raise SessionError(
            f"no shmlog session named {name!r} exists for uid {os.getuid()} (it was "
            f"closed, or never created); 'shmlog ls' lists the sessions"
        ) from None
    except (SegmentError, OSError) as exc:
        raise SessionError(f"cannot read shmlog session {name!r}: {exc}") from None
    # A control segment appears whole (see Segment.create): ready or closed.
    control = Control(segment)
    if control.read_state().state == STATE_CLOSED:
        problem: str | None = f"shmlog session {name!r} is closing"
    else:
        problem = _problem(control, name)
    if problem is not None:
        segment.close()
        raise SessionError(problem)
    return Session(name, control, None)


# -- sampling ----------------------------------------------------------------------------


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
    progress: dict[str, dict[str, Any]]  # hub -> {PROGRESS_KEYS entry: value}


def _split_key(full: str) -> tuple[str, str]:
    hub, sep, key = full.partition(SEPARATOR)
    return (hub, key) if sep else ("", full)


def _ratio(value_sum: float, count_sum: float) -> float:
    return value_sum / count_sum if count_sum else math.nan


class Watcher:
    """Reads a session for ``shmlog top`` and remembers ring totals between refreshes."""

    def __init__(self, session: Session, window: int = 10) -> None:
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
            hub, key = _split_key(full)
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
        window = self.window
        per_writer: list[WriterStat] = []
        snaps = []
        for ring in rings:
            snap = ring.snapshot(max(window, _RATE_RECORDS))
            snaps.append(snap)
            values, counts, times = snap.values, snap.counts, snap.times
            n = snap.updates
            if window >= n:
                mean = _ratio(snap.value_sum, snap.count_sum) if n else None
            else:
                mean = _ratio(float(values[-window:].sum()), float(counts[-window:].sum()))
            rate = self._rate((full, ring.writer), n, times, now)
            seen[(full, ring.writer)] = (n, now)
            per_writer.append(WriterStat(
                label=labels.get(ring.writer, f"writer{ring.writer}"),
                alive=alive.get(ring.writer, False),
                updates=n,
                current=float(values[-1]) if len(values) else None,
                mean=mean,
                last_ns=int(times[-1]) if len(times) else None,
                rate=rate,
            ))
        updates = sum(s.updates for s in snaps)
        current = mean = last = None
        filled = [s for s in snaps if len(s.values)]
        if filled:
            times = np.concatenate([s.times for s in filled])
            order = np.argsort(times, kind="stable")
            values = np.concatenate([s.values for s in filled])[order]
            counts = np.concatenate([s.counts for s in filled])[order]
            current, last = float(values[-1]), int(times[order[-1]])
            if window >= updates:
                mean = _ratio(sum(s.value_sum for s in snaps), sum(s.count_sum for s in snaps))
            else:
                mean = _ratio(float(values[-window:].sum()), float(counts[-window:].sum()))
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
        """PROGRESS_KEYS values per hub, completed from ``shmlog.report_progress``.

        A hub's own ``iter`` (etc.) info wins over the ``progress`` dict that
        ``report_progress`` stores at each logging step, being more recent.
        Without an ``eta`` value the eta is the log writer's: the window mean
        of ``train/time`` times the iterations left.
        """
        found: dict[str, dict[str, Any]] = {}
        for full in self.session.info_keys():
            hub, key = _split_key(full)
            if key not in PROGRESS_KEYS and key != REPORTED_KEY:
                continue
            raw = self.session.info_get(full)
            if raw is None:
                continue
            try:
                value = codec.decode(raw)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
                continue  # not plain data: nothing a progress line can show
            found.setdefault(hub, {})[key] = value
        times = {k.hub: k.mean for k in keys if k.key == "train/time"}
        progress: dict[str, dict[str, Any]] = {}
        for hub, values in found.items():
            reported = values.pop(REPORTED_KEY, None)
            if isinstance(reported, dict):
                for name in PROGRESS_KEYS:
                    if reported.get(name) is not None:
                        values.setdefault(name, reported[name])
            mean_time = times.get(hub)
            if "eta" not in values and mean_time is not None and math.isfinite(mean_time):
                try:
                    left = int(values["max_iters"]) - int(values["iter"]) - 1
                except (KeyError, TypeError, ValueError):
                    pass
                else:
                    values["eta"] = mean_time * max(left, 0)
            if values:
                progress[hub] = values
        return progress


# -- rendering ---------------------------------------------------------------------------


@dataclass
class Frame:
    """Lines of one screen; the first ``fixed`` stay put when the rest scrolls."""

    lines: list[str]
    fixed: int


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.5g}"


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 1e5 else f"{rate:.3g}"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_eta(eta: Any) -> str:
    """Seconds as MMEngine prints its eta: ``H:MM:SS`` (``1 day, H:MM:SS`` beyond)."""
    try:
        seconds = float(eta)
    except (TypeError, ValueError):
        return str(eta)
    if not math.isfinite(seconds):
        return "-"
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


def _format_count(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def progress_line(info: dict[str, Any]) -> str:
    parts = []
    for name, total in (("iter", "max_iters"), ("epoch", "max_epochs")):
        if name in info and total in info:
            parts.append(f"{name} {_format_count(info[name])}/{_format_count(info[total])}")
        elif name in info:
            parts.append(f"{name} {_format_count(info[name])}")
        elif total in info:
            parts.append(f"{total} {_format_count(info[total])}")
    if "eta" in info:
        parts.append(f"eta {format_eta(info['eta'])}")
    return "  ".join(parts)


def render(sample: Sample, show_writers: bool = True) -> Frame:
    """The lines of one frame: title, progress, then one row per key (and writer)."""
    hubs = sorted({k.hub for k in sample.keys} | set(sample.progress))
    many_hubs = len(hubs) > 1
    clock = time.strftime("%H:%M:%S", time.localtime(sample.wall))
    exited = sample.writers_total - sample.writers_alive
    writers = f"writers {sample.writers_alive}" + (f" (+{exited} exited)" if exited else "")
    title = (
        f"shmlog top  session {sample.session}  members {sample.members}  {writers}  "
        f"keys {len(sample.keys)}  {clock}"
    )
    lines = [title]
    for hub in sorted(sample.progress):
        text = progress_line(sample.progress[hub])
        if text:
            lines.append(f"[{hub}] {text}" if many_hubs else text)
    lines.append("")

    header = ["HUB"] if many_hubs else []
    header += ["KEY", "CURRENT", f"MEAN({sample.window})", "RATE/s", "UPDATES", "LAST"]
    rows: list[list[str]] = []
    for stat in sample.keys:
        age = None if stat.last_ns is None else (sample.taken_ns - stat.last_ns) / 1e9
        row = [stat.hub] if many_hubs else []
        row += [stat.key, format_value(stat.current), format_value(stat.mean),
                format_rate(stat.rate), str(stat.updates), format_age(age)]
        rows.append(row)
        if not show_writers:
            continue
        for w in stat.writers:
            age = None if w.last_ns is None else (sample.taken_ns - w.last_ns) / 1e9
            label = "  " + w.label + ("" if w.alive else " (exited)")
            row = [""] if many_hubs else []
            row += [label, format_value(w.current), format_value(w.mean),
                    format_rate(w.rate), str(w.updates), format_age(age)]
            rows.append(row)
    if not rows:
        lines.append("no scalars logged yet")
        return Frame(lines, len(lines))
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    text_columns = 2 if many_hubs else 1  # left-aligned; the numbers are right-aligned

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if i < text_columns else c.rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    lines.append(line(header))
    fixed = len(lines)
    lines.extend(line(r) for r in rows)
    return Frame(lines, fixed)


# -- showing -------------------------------------------------------------------------------


def _run_plain(
    watcher: Watcher, out: TextIO, frames: int | None, interval: float, show_writers: bool
) -> None:
    """Plain frames separated by FRAME_SEPARATOR; ``frames`` None means until stopped."""
    shown = 0
    while frames is None or shown < frames:
        if shown:
            time.sleep(interval)
        frame = render(watcher.sample(), show_writers)
        if shown:
            out.write(FRAME_SEPARATOR)
        out.write("\n".join(frame.lines) + "\n")
        out.flush()
        shown += 1


_HELP = "q quit  w per-writer rows  arrows/PgUp/PgDn scroll"


def _run_curses(watcher: Watcher, interval: float, show_writers: bool) -> None:
    import curses

    def draw(screen: Any, frame: Frame, scroll: int) -> int:
        height, width = screen.getmaxyx()
        fixed, body = frame.lines[: frame.fixed], frame.lines[frame.fixed :]
        room = max(0, height - len(fixed) - 1)
        scroll = max(0, min(scroll, len(body) - room))
        shown = body[scroll : scroll + room]
        footer = _HELP
        if len(body) > room:
            footer += f"  rows {scroll + 1}-{scroll + len(shown)} of {len(body)}"
        screen.erase()
        rows = [*fixed, *shown][: max(0, height - 1)]
        for y, text in enumerate(rows):
            attr = curses.A_REVERSE if y == 0 else curses.A_BOLD if y == frame.fixed - 1 else 0
            if y == 0:
                text = text.ljust(width)
            try:
                screen.addnstr(y, 0, text, max(0, width - 1), attr)
            except curses.error:
                pass
        try:
            screen.addnstr(height - 1, 0, footer, max(0, width - 1), curses.A_DIM)
        except curses.error:
            pass
        screen.refresh()
        return scroll

    def loop(screen: Any) -> None:
        try:
            curses.use_default_colors()  # keep the terminal's own colours
            curses.curs_set(0)
        except curses.error:
            pass
        screen.keypad(True)
        writers = show_writers
        scroll = 0
        sample = watcher.sample()
        due = time.monotonic() + interval
        while True:
            frame = render(sample, writers)
            scroll = draw(screen, frame, scroll)
            page = max(1, screen.getmaxyx()[0] - frame.fixed - 1)
            screen.timeout(max(0, int((due - time.monotonic()) * 1000)))
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == ord("w"):
                writers = not writers
            elif key in (curses.KEY_DOWN, ord("j")):
                scroll += 1
            elif key in (curses.KEY_UP, ord("k")):
                scroll -= 1
            elif key in (curses.KEY_NPAGE, ord(" ")):
                scroll += page
            elif key == curses.KEY_PPAGE:
                scroll -= page
            elif key == curses.KEY_HOME:
                scroll = 0
            elif key == curses.KEY_END:
                scroll = len(frame.lines)
            if time.monotonic() >= due:
                sample = watcher.sample()
                due = time.monotonic() + interval

    curses.wrapper(loop)


def _run_ansi(
    watcher: Watcher, out: TextIO, inp: TextIO | None, interval: float, show_writers: bool
) -> None:
    """Redraw in place: cursor home, each line cleared to its end, the rest cleared."""
    import termios
    import tty

    fd = inp.fileno() if inp is not None and inp.isatty() else None
    saved = termios.tcgetattr(fd) if fd is not None else None
    try:
        if fd is not None:
            tty.setcbreak(fd)
        out.write("\x1b[?25l\x1b[2J")
        writers = show_writers
        sample = watcher.sample()
        due = time.monotonic() + interval
        while True:
            size = shutil.get_terminal_size()
            lines = render(sample, writers).lines[: max(1, size.lines - 1)]
            out.write("\x1b[H" + "".join(f"{text[: size.columns - 1]}\x1b[K\n" for text in lines)
                      + "\x1b[J")
            out.flush()
            left = due - time.monotonic()
            if left > 0:
                if fd is None:
                    time.sleep(left)
                elif select.select([fd], [], [], left)[0]:
                    key = os.read(fd, 1)
                    if key in (b"q", b"Q"):
                        return
                    if key == b"w":
                        writers = not writers
                    continue
            sample = watcher.sample()
            due = time.monotonic() + interval
    finally:
        out.write("\x1b[?25h")
        out.flush()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _exit_on(*signums: int) -> None:
    """Turn ``signums`` into SystemExit(128 + signum), where their default would kill."""
    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    for signum in signums:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, leave)
        except ValueError:  # not the main thread: leave the defaults
            return


def _curses_usable(out: TextIO) -> bool:
    try:
        import curses
    except ImportError:
        return False
    try:
        curses.setupterm(fd=out.fileno())
    except (curses.error, OSError):  # a terminal terminfo does not know
        return False
    return True


def run(
    session: str | None = None,
    *,
    window: int = 10,
    interval: float = 1.0,
    once: bool = False,
    frames: int | None = None,
    show_writers: bool = True,
    ansi: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    """``shmlog top``; returns the exit status.

    Interactive on a terminal (curses, or ANSI with ``ansi`` or when curses
    cannot drive it), plain frames otherwise.  Quitting (q, Ctrl-C) and the
    session going away are normal ends: status 0, with a message on ``err``
    for the latter.  A session that cannot be watched at all is status 1.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    inp = sys.stdin if inp is None else inp
    try:
        watcher = Watcher.open(choose_session(session), window)
    except (SessionError, ValueError) as exc:
        err.write(f"shmlog top: {exc}\n")
        return 1
    gone = None
    try:
        if once:
            frames = 1
        if frames is not None or not out.isatty():
            _run_plain(watcher, out, frames, interval, show_writers)
        else:
            # Killed or hung up, the terminal is still given back (by the
            # exception unwinding through curses.wrapper or _run_ansi).
            _exit_on(signal.SIGTERM, signal.SIGHUP)
            if ansi or not _curses_usable(out):
                _run_ansi(watcher, out, inp, interval, show_writers)
            else:
                _run_curses(watcher, interval, show_writers)
    except SessionGone as exc:
        gone = str(exc)
    except KeyboardInterrupt:
        pass
    except SessionError as exc:
        err.write(f"shmlog top: {exc}\n")
        return 1
    finally:
        watcher.close()
    if gone is not None:
        out.flush()
        err.write(f"shmlog top: {gone}\n")
    return 0

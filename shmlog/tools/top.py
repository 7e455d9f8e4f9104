"""``shmlog top``: a live view of a running session, from another terminal.

Sampling (``shmlog.tools.watch``) is separate from rendering
(``shmlog.tools.screen``, which turns a sample into plain text lines) and
from showing the lines, here: curses for an interactive terminal, ANSI cursor
movement where curses is not available, plain frames for ``--once``,
``--frames`` and pipes.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import time
from typing import Any, TextIO

from ..errors import SessionError
from ..format.presence import EXIT_GRACE
from . import sample_json
from .screen import Frame, format_value, render
from .watch import SessionGone, Watcher, choose_session

__all__ = [
    "FRAME_SEPARATOR",
    "Frame",
    "SessionGone",
    "Watcher",
    "choose_session",
    "format_value",
    "render",
    "run",
    "snapshot",
]

# Written between two plain-text frames (``--frames``, pipes).
FRAME_SEPARATOR = "\f\n"


def _run_plain(
    watcher: Watcher, out: TextIO, frames: int | None, interval: float, show_writers: bool
) -> None:
    """Plain frames separated by FRAME_SEPARATOR; ``frames`` None means until stopped."""
    shown = 0
    # On a terminal the title fits its width; a pipe gets whole lines.
    width = shutil.get_terminal_size().columns - 1 if _isatty(out) else None
    while frames is None or shown < frames:
        if shown:
            time.sleep(interval)
        frame = render(watcher.sample(), show_writers, width)
        if shown:
            out.write(FRAME_SEPARATOR)
        out.write("\n".join(frame.lines) + "\n")
        out.flush()
        shown += 1


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


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
            frame = render(sample, writers, max(1, screen.getmaxyx()[1] - 1))
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
            lines = render(sample, writers, max(1, size.columns - 1)).lines[
                : max(1, size.lines - 1)
            ]
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
        # An ended writer shows as exited once its label stayed without a
        # live writer for a few refreshes (shmlog.format.presence).
        watcher = Watcher.open(choose_session(session), window,
                               exit_grace=max(EXIT_GRACE, 2 * interval))
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


def snapshot(session: str | None = None, *, window: int = 10, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """``shmlog top --json``: one sample as JSON (``shmlog.tools.sample_json``); the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        with Watcher.open(choose_session(session), window) as watcher:
            sample = watcher.sample()
    except (SessionError, SessionGone, ValueError) as exc:
        err.write(f"shmlog top: {exc}\n")
        return 1
    out.write(sample_json.dumps(sample) + "\n")
    out.flush()
    return 0

"""The ``shmlog`` command: look at, watch and clean up this user's sessions and runs.

``ls`` and ``clean`` manage sessions; ``top`` watches a live one from another
terminal; ``tail`` and ``plot`` read what a run leaves on disk (its log file,
its scalars file), so they work during the run and after it.  Each subcommand
imports what it needs when it runs: ``shmlog ls`` does not pay for curses or
matplotlib.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from .shm import inspect


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_ls(args: argparse.Namespace) -> int:
    sessions = inspect.list_sessions()
    if not sessions:
        print("no shmlog sessions")
        return 0
    rows = [("NAME", "OWNER", "STATUS", "MEMBERS", "WRITERS", "KEYS", "BYTES", "AGE")]
    now = time.time_ns()
    for s in sessions:
        age = f"{(now - s.created_ns) / 1e9:.0f}s" if s.created_ns else "-"
        rows.append((s.name, str(s.creator), s.status, str(s.members), str(s.writers),
                     str(s.keys), _size(s.bytes), age))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    removed = inspect.clean(everything=args.all)
    for name in removed:
        print(f"removed {name}")
    if not removed:
        print("nothing to clean" if not args.all else "no sessions")
    return 0


# -- top ---------------------------------------------------------------------------------


def cmd_top(args: argparse.Namespace) -> int:
    from .sinks import top

    return top.run(
        args.session,
        window=args.window,
        interval=args.interval,
        once=args.once,
        frames=args.frames,
        show_writers=not args.no_writers,
        ansi=args.ansi,
    )


# -- tail --------------------------------------------------------------------------------

MASTER_LOG = "*.log"
RANK_LOG = "*_rank*.log"


def master_logs(directory: str | os.PathLike[str]) -> dict[Path, float]:
    """Every ``*.log`` under ``directory`` that is not a per-rank ``*_rank*.log``, with its mtime."""
    found: dict[Path, float] = {}
    for parent, _dirs, files in os.walk(directory):
        for name in files:
            if not fnmatch.fnmatch(name, MASTER_LOG) or fnmatch.fnmatch(name, RANK_LOG):
                continue
            path = Path(parent, name)
            try:
                found[path] = path.stat().st_mtime
            except OSError:
                continue
    return found


def _newest(logs: dict[Path, float]) -> Path | None:
    return max(logs, key=lambda p: (logs[p], str(p))) if logs else None


def find_master_log(directory: str | os.PathLike[str]) -> Path | None:
    """The newest ``*.log`` under ``directory`` that is not a per-rank ``*_rank*.log``."""
    return _newest(master_logs(directory))


def last_lines(f: BinaryIO, count: int) -> tuple[bytes, int]:
    """The last ``count`` lines of ``f`` and the offset of its end, reading backwards."""
    end = f.seek(0, os.SEEK_END)
    if count <= 0 or end == 0:
        return b"", end
    data, position = b"", end
    while position > 0:
        step = min(1 << 16, position)
        position -= step
        f.seek(position)
        data = f.read(step) + data
        if data.count(b"\n", 0, len(data) - 1) >= count:
            break
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(count):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            break
    return data[cut + 1 :], end


class _Follower:
    """Follows one file by name, as ``tail -F`` does, through rotation and truncation."""

    def __init__(self, path: Path, out: BinaryIO, err: TextIO) -> None:
        self.path = path
        self.out = out
        self.err = err
        self.file: BinaryIO | None = None

    def open(self, lines: int | None) -> None:
        """Open and print the last ``lines`` lines (None: the whole file)."""
        self.close()
        self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        if lines is None:
            self.pump()
        else:
            data, _end = last_lines(self.file, lines)
            self.write(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.out.flush()

    def pump(self) -> bool:
        """Copy what was appended since the last call; True when anything was."""
        if self.file is None:
            return False
        moved = False
        while True:
            chunk = self.file.read(1 << 16)
            if not chunk:
                return moved
            self.write(chunk)
            moved = True

    def check(self) -> None:
        """At the end of the file: reopen a replaced file, rewind a truncated one."""
        assert self.file is not None
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return  # rotated away, its successor not created yet
        current = os.fstat(self.file.fileno())
        if (named.st_ino, named.st_dev) != (current.st_ino, current.st_dev):
            self.pump()  # whatever reached the old file after our last read
            self.note(f"{self.path} has been replaced; following the new file")
            self.open(None)
        elif current.st_size < self.file.tell():
            self.note(f"{self.path}: file truncated")
            self.file.seek(0)

    def note(self, message: str) -> None:
        self.out.flush()
        self.err.write(f"shmlog tail: {message}\n")
        self.err.flush()


def tail(
    target: str | os.PathLike[str],
    lines: int = 10,
    follow: bool = True,
    interval: float = 0.25,
    out: BinaryIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``shmlog tail``; returns the exit status (0 after Ctrl-C)."""
    out = sys.stdout.buffer if out is None else out
    err = sys.stderr if err is None else err
    directory = Path(target) if os.path.isdir(target) else None
    known: set[Path] = set()
    if directory is not None:
        logs = master_logs(directory)
        known.update(logs)
        path = _newest(logs)
        if path is None and not follow:
            err.write(f"shmlog tail: no log file in {directory} (looked for {MASTER_LOG}, "
                      f"leaving out {RANK_LOG})\n")
            return 1
    else:
        path = Path(target)
        if not path.is_file():
            err.write(f"shmlog tail: {path}: no such file or directory\n")
            return 1
    follower = _Follower(path, out, err) if path is not None else None
    try:
        if follower is not None:
            follower.open(lines)
        if not follow:
            return 0
        if follower is None:
            err.write(f"shmlog tail: waiting for a log file in {directory}\n")
            err.flush()
        rescan = time.monotonic() + max(1.0, interval)
        while True:
            if follower is not None and follower.pump():
                continue
            if follower is not None:
                follower.check()
            if directory is not None and time.monotonic() >= rescan:
                # A new run in the same directory starts a new log: follow it.
                # Only a log that was not there before counts, so two logs
                # written in turn do not make the view jump between them.
                rescan = time.monotonic() + max(1.0, interval)
                logs = master_logs(directory)
                newest = _newest({p: t for p, t in logs.items() if p not in known})
                known.update(logs)
                if newest is not None:
                    if follower is not None:
                        follower.pump()
                        follower.close()
                    follower = _Follower(newest, out, err)
                    follower.note(f"following {newest}")
                    follower.open(None)  # all of it: it began after we started
                    continue
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if follower is not None:
            follower.close()


def cmd_tail(args: argparse.Namespace) -> int:
    return tail(args.path, lines=args.lines, follow=not args.no_follow, interval=args.interval)


# -- plot --------------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    from .sinks import plot

    try:
        source = plot.find_scalars(args.path)
        scalars = plot.load_scalars(source)
        if scalars.skipped:
            print(f"shmlog plot: {source}: skipped {scalars.skipped} lines that are not JSON "
                  f"objects with a numeric 'step'", file=sys.stderr)
        out = plot.default_output(source) if args.output is None else args.output
        png = plot.render_png(scalars, out, args.title)
    except (plot.PlotError, OSError) as exc:
        print(f"shmlog plot: {exc}", file=sys.stderr)
        return 1
    print(png)
    return 0


# -- the command -------------------------------------------------------------------------


def _positive(kind: type) -> object:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a value > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmlog",
        description="Inspect, watch and clean shmlog sessions; follow and plot runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list this user's sessions")
    ls.set_defaults(func=cmd_ls)
    clean = sub.add_parser("clean", help="remove sessions whose processes all exited")
    clean.add_argument("--all", action="store_true", help="remove every session of this user")
    clean.set_defaults(func=cmd_clean)

    top = sub.add_parser(
        "top",
        help="live view of a running session's scalars (read-only)",
        description="Live view of a running session: per key (and per writer) the current "
        "value, window mean, update rate and total updates, with iteration and eta from "
        "runtime info. Keys: q quit, w per-writer rows, arrows/PgUp/PgDn scroll. Status 0 "
        "when quit or when the session closes, 1 when it cannot be watched.",
    )
    top.add_argument("session", nargs="?",
                     help="session name (default: the only live session of this user)")
    top.add_argument("--window", type=_positive(int), default=10,
                     help="updates in the window mean (default: 10)")
    top.add_argument("--interval", type=_positive(float), default=1.0,
                     help="seconds between refreshes (default: 1.0)")
    top.add_argument("--once", action="store_true", help="print one plain-text frame and exit")
    top.add_argument("--frames", type=_positive(int), metavar="N",
                     help="print N plain-text frames, separated by form feeds, and exit")
    top.add_argument("--no-writers", action="store_true", help="hide the per-writer rows")
    top.add_argument("--ansi", action="store_true",
                     help="redraw with ANSI escapes instead of curses")
    top.set_defaults(func=cmd_top)

    tail_cmd = sub.add_parser(
        "tail",
        help="follow a run's log file",
        description="Print the last lines of a log file and follow it (through rotation and "
        "truncation). Given a directory, follow its newest *.log that is not a per-rank "
        "*_rank*.log, switching when a newer one appears.",
    )
    tail_cmd.add_argument("path", help="log file, or run directory")
    tail_cmd.add_argument("-n", "--lines", type=_count, default=10,
                          help="lines to print first (default: 10)")
    tail_cmd.add_argument("--no-follow", action="store_true", help="print and exit")
    tail_cmd.add_argument("--interval", type=_positive(float), default=0.25,
                          help="seconds between checks for new lines (default: 0.25)")
    tail_cmd.set_defaults(func=cmd_tail)

    plot_cmd = sub.add_parser(
        "plot",
        help="plot loss/lr/time curves of a run to PNG (needs matplotlib)",
        description="Render the curves of a JSON-lines scalars file (one object per step, "
        "e.g. vis_data/scalars.json) to PNG: one subplot each for losses, learning rates, "
        "times and other metrics, against the step. Prints the PNG's path.",
    )
    plot_cmd.add_argument("path", help="scalars file, or run directory to search "
                          "(*.jsonl, scalars.json*; the newest is used)")
    plot_cmd.add_argument("-o", "--output", help="PNG path (default: next to the scalars file)")
    plot_cmd.add_argument("--title", help="figure title (default: the scalars file's path)")
    plot_cmd.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (``shmlog top --frames 9 | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``shmlog`` command: look at, watch and clean up this user's sessions and runs.

``ls`` and ``clean`` manage sessions; ``top`` watches a live one from another
terminal and ``serve`` serves it to Prometheus; ``tail`` and ``plot`` read
what a run leaves on disk (its log file, its scalars file), so they work
during the run and after it.  Each subcommand imports what it needs when it
runs: ``shmlog ls`` does not pay for curses, matplotlib or prometheus_client.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from .._version import __version__
from ..errors import PlotError
from ..format.exposition import DEFAULT_HOST, check_port
from .sessions import list_sessions, plan, remove


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_ls(args: argparse.Namespace) -> int:
    sessions = list_sessions()
    if not sessions:
        print("no shmlog sessions")
        return 0
    rows = [("NAME", "OWNER", "STATUS", "MEMBERS", "WRITERS", "KEYS", "BYTES", "AGE", "METRICS")]
    now = time.time_ns()
    for s in sessions:
        age = f"{(now - s.created_ns) / 1e9:.0f}s" if s.created_ns else "-"
        rows.append((s.name, str(s.creator), s.status, str(s.members), str(s.writers),
                     str(s.keys), _size(s.bytes), age, s.metrics or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    names = args.names or None
    if names is not None and args.all:
        print("shmlog clean: --all removes every session; name sessions or give --all, "
              "not both", file=sys.stderr)
        return 2
    try:
        verdicts = plan(names, everything=args.all, force=args.force)
    except ValueError as exc:
        print(f"shmlog clean: {exc}", file=sys.stderr)
        return 1
    acted = False
    for verdict in verdicts:
        if not verdict.remove:
            continue
        if args.dry_run:
            print(f"would remove {verdict.info.name} ({verdict.info.status})")
            acted = True
        elif remove(verdict, force=args.force, everything=args.all):
            print(f"removed {verdict.info.name}")
            acted = True
    kept = [v for v in verdicts if not v.remove]
    if names is not None:
        for verdict in kept:
            print(f"shmlog clean: not removing {verdict.info.name}: {verdict.reason}",
                  file=sys.stderr)
        return 1 if kept else 0
    if not acted:
        print("no sessions" if args.all else "nothing to clean")
    orphaned = sum(v.info.status.startswith("orphaned") for v in kept)
    if orphaned:
        print(f"{orphaned} orphaned session{'s' if orphaned > 1 else ''} left (no member, but "
              f"processes still write to {'them' if orphaned > 1 else 'it'}; 'shmlog ls' "
              f"shows the pids): 'shmlog clean --force' removes "
              f"{'them' if orphaned > 1 else 'it'}")
    return 0


# -- top ---------------------------------------------------------------------------------


def cmd_top(args: argparse.Namespace) -> int:
    from . import top

    if args.json:
        return top.snapshot(args.session, window=args.window)
    return top.run(
        args.session,
        window=args.window,
        interval=args.interval,
        once=args.once,
        frames=args.frames,
        show_writers=not args.no_writers,
        ansi=args.ansi,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from . import serve

    return serve.run(args.session, host=args.host, port=args.port)


def cmd_tail(args: argparse.Namespace) -> int:
    from .tail import tail

    return tail(args.path, lines=args.lines, follow=not args.no_follow, interval=args.interval)


# -- plot --------------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plot

    try:
        source = plot.find_scalars(args.path)
        scalars = plot.load_scalars(source)
        if scalars.skipped:
            print(f"shmlog plot: {source}: skipped {scalars.skipped} lines that are not JSON "
                  f"objects with a numeric 'step'", file=sys.stderr)
        out = plot.default_output(source) if args.output is None else args.output
        png = plot.render_png(scalars, out, args.title)
    except (PlotError, OSError) as exc:
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


def _port(text: str) -> int:
    try:
        return check_port(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int from 0 to 65535 (0: any free port), got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmlog",
        description="Inspect, watch and clean shmlog sessions; follow and plot runs.",
    )
    parser.add_argument("--version", action="version", version=f"shmlog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list this user's sessions")
    ls.set_defaults(func=cmd_ls)
    clean = sub.add_parser(
        "clean",
        help="remove sessions whose processes all exited",
        description="Remove this user's stale sessions (every process gone) and broken ones. "
        "Orphaned sessions (no member left, but processes still write to them) go with "
        "--force; live ones only with --all, and a session whose members run in another PID "
        "namespace is never taken for dead. Named sessions are removed only when that is "
        "safe by the same rules; otherwise the command says why and exits with status 1.",
    )
    clean.add_argument("names", nargs="*", metavar="NAME",
                       help="clean only these sessions (default: every session of this user)")
    clean.add_argument("--all", action="store_true",
                       help="remove every session of this user, alive or not")
    clean.add_argument(
        "--force", action="store_true",
        help="also remove orphaned sessions: no member left, but processes still write to them",
    )
    clean.add_argument("-n", "--dry-run", action="store_true",
                       help="print what would be removed, remove nothing")
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
    one_shot = top.add_mutually_exclusive_group()
    one_shot.add_argument("--frames", type=_positive(int), metavar="N",
                          help="print N plain-text frames, separated by form feeds, and exit")
    one_shot.add_argument("--json", action="store_true",
                          help="print one sample as JSON (every writer included) and exit")
    top.add_argument("--no-writers", action="store_true", help="hide the per-writer rows")
    top.add_argument("--ansi", action="store_true",
                     help="redraw with ANSI escapes instead of curses")
    top.set_defaults(func=cmd_top)

    serve = sub.add_parser(
        "serve",
        help="serve a running session's scalars on /metrics for Prometheus (read-only)",
        description="Serve a running session on http://HOST:PORT/metrics in the Prometheus "
        "text format (OpenMetrics when the Accept header asks for it): per key and writer "
        "the current value, update count, sums, min and max; iteration, epoch and eta; "
        "members, writers and dropped log records. Reads the session only. Prints the URL; "
        "exits with status 0 when the session goes away or on SIGINT/SIGTERM, 1 when it "
        "cannot start. Needs prometheus_client: pip install 'shmlog[metrics]'.",
    )
    serve.add_argument("session", nargs="?",
                       help="session name (default: the only live session of this user)")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help=f"address to listen on (default: {DEFAULT_HOST}, this machine only)")
    serve.add_argument("--port", type=_port, default=0,
                       help="TCP port (default: 0, any free port; the URL says which)")
    serve.set_defaults(func=cmd_serve)

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

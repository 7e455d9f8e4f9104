"""The ``shmlog`` command: look at and clean up this user's sessions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shmlog", description="Inspect and clean shmlog shared-memory sessions."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list this user's sessions")
    ls.set_defaults(func=cmd_ls)
    clean = sub.add_parser("clean", help="remove sessions whose processes all exited")
    clean.add_argument("--all", action="store_true", help="remove every session of this user")
    clean.set_defaults(func=cmd_clean)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

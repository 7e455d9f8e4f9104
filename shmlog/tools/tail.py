"""``shmlog tail``: follow a run's log file, as ``tail -F`` does, through rotation.

Given a run directory it follows the newest master log (``*.log`` that is
not a per-rank ``*_rank*.log``) and switches when a newer run starts one.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO, TextIO

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

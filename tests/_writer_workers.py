"""Helpers for the log writer tests: rank programs, worker targets, log file readers.

A rank is an independent ``python -c`` program (as torchrun would start it)
that joins a session by name and then does what the test tells it, one
command per line on its stdin, answering each on a private pipe.  Its stdout
(where rank 0's terminal lines go, and which the sidecar it may start
inherits) points at /dev/null and its stderr at a file, so that no pipe can
fill up and block it, and no pipe stays open after the rank is gone.

Worker targets live at module top level because spawn children import them
by module name (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _shared_workers import child_env

TIMEOUT = 30.0  # seconds for any single answer, join or wait

# A line of an MMLogger file: '2026/11/25 12:00:00 - mmengine - INFO - message'.
_FILE_LINE = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} - (\S+) - ([A-Z]+) - (.*)$")

RANK_SCRIPT = r"""
import json, os, sys, time

# Answers go to a private copy of the stdout pipe; fd 1 (terminal lines, and
# whatever a sidecar started from here prints) goes to /dev/null.
reply = os.fdopen(os.dup(1), "w", buffering=1)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
os.close(null)

import shmlog
from shmlog import MMLogger

cfg = json.loads(sys.argv[1])
session = shmlog.init(cfg["name"], log_file=cfg["log_file"], **cfg.get("init", {}))
logger = MMLogger.get_instance(
    cfg["instance"], log_file=cfg["log_file"], distributed=cfg["distributed"]
)
source = "rank" + os.environ.get("RANK", "0")


def say(*parts):
    reply.write("@ " + " ".join(str(p) for p in parts) + "\n")


say("ready", os.getpid(), session.writer_pid)
for command in sys.stdin:
    word, *args = command.split()
    if word == "log":  # log START COUNT [PADDING]: numbered lines, slowest call reported
        start, count = int(args[0]), int(args[1])
        padding = " " + "x" * int(args[2]) if len(args) > 2 else ""
        slowest = 0.0
        for i in range(start, start + count):
            began = time.perf_counter()
            logger.info(f"{source} line {i}{padding}")
            slowest = max(slowest, time.perf_counter() - began)
        say("logged", slowest)
    elif word == "flush":
        say("flushed", session.flush())
    elif word == "writer":
        say("writer", session.writer_pid)
    elif word == "close":
        session.close()
        say("closed")
    elif word == "exit":  # leave without closing: the atexit hook must flush
        break
"""


class Rank:
    """One rank program, driven through its stdin."""

    def __init__(self, rank: int, world_size: int, cfg: dict[str, Any], workdir: Path) -> None:
        self.rank = rank
        self.stderr_path = workdir / f"rank{rank}.stderr"
        env = child_env(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RANK_SCRIPT, json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                env=env, text=True,
            )
        self._buffer = b""
        self.pid = self.proc.pid

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str) -> list[str]:
        """Wait for the next answer, check it is ``word``, return its arguments."""
        line = self._answer()
        parts = line.split()
        if parts[:2] != ["@", word]:
            raise AssertionError(
                f"rank {self.rank}: expected {word!r}, got {line!r}\n{self.stderr()}"
            )
        return parts[2:]

    def ask(self, command: str, word: str) -> list[str]:
        self.send(command)
        return self.expect(word)

    def _answer(self) -> str:
        deadline = time.monotonic() + TIMEOUT
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"rank {self.rank} did not answer\n{self.stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(
                        f"rank {self.rank} exited ({self.proc.wait(TIMEOUT)})\n{self.stderr()}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def stderr(self) -> str:
        try:
            return f"stderr of rank {self.rank}:\n{self.stderr_path.read_text()}"
        except OSError:
            return ""

    def finish(self, command: str | None = None) -> int:
        """Send ``command`` (if any), close stdin and wait for the exit code."""
        if command is not None:
            self.send(command)
        self.proc.stdin.close()
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise AssertionError(f"rank {self.rank} did not exit\n{self.stderr()}") from None
        self.proc.stdout.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass


def start_ranks(world_size: int, cfg: dict[str, Any], workdir: Path) -> list[Rank]:
    """Start every rank at once and wait until each has joined the session."""
    ranks = [Rank(r, world_size, cfg, workdir) for r in range(world_size)]
    try:
        for rank in ranks:
            rank.expect("ready")
    except BaseException:
        for rank in ranks:
            rank.kill()
        raise
    return ranks


# -- log files -------------------------------------------------------------------------


def read_log(path: Path) -> list[tuple[str, str]]:
    """(level, message) of every line of an MMLogger file; continuation lines kept as-is."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _FILE_LINE.match(line)
        if match is None:
            entries.append(("", line))
        else:
            entries.append((match.group(2), match.group(3)))
    return entries


def numbered(messages: list[str], source: str) -> list[int]:
    """The numbers of ``'<source> line <n>'`` messages, in file order."""
    pattern = re.compile(rf"^{re.escape(source)} line (\d+)\b")
    found = []
    for message in messages:
        match = pattern.match(message)
        if match is not None:
            found.append(int(match.group(1)))
    return found


def messages_of(path: Path) -> list[str]:
    return [message for _level, message in read_log(path)]


def strip_date(line: str) -> str:
    """``'<date> <time> - name - LEVEL - message'`` -> ``'name - LEVEL - message'``."""
    return line.split(" - ", 1)[1]


# -- multiprocessing targets ---------------------------------------------------------------


def log_as_worker(instance: str, log_file: str, worker: int, count: int) -> None:
    """As DataLoader worker ``worker``: log ``count`` numbered lines through MMLogger."""
    from shmlog import MMLogger

    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    logger = MMLogger.get_instance(instance, log_file=log_file)
    for i in range(count):
        logger.info(f"worker{worker} line {i}")

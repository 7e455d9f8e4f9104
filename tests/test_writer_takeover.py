"""The log writer may die at any instant: its successor writes every record exactly once.

The sidecar is SIGKILLed at a random instant while DataLoader-like children
log (early, before it has written anything, or in the middle of a batch, a
flush, a commit or a rollover); the member's standby thread takes over from
the last commit.  Every line must be in the files once, each child's in
order, with plain and with rotating files.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

import shmlog
from shmlog import MMLogger
from shmlog.format.formatter import TerminalHandler

TIMEOUT = 60.0
PRODUCERS, LINES = 3, 800
LINE = re.compile(r" - INFO - \[worker(\d+)\] p\d+ line (\d+)$")


def _produce(instance: str, worker: int, go: object) -> None:
    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    logger = MMLogger.get_instance(instance)
    go.wait(TIMEOUT)
    for i in range(LINES):
        logger.info(f"p{worker} line {i}")
        if i % 100 == 99:
            time.sleep(0.03)  # spread the lines over a quarter of a second


def _files(directory: Path) -> list[Path]:
    """The log file and its rotated backups, oldest first."""
    backups = sorted(directory.glob("tmp.log.*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, directory / "tmp.log"]


def _lines_by_worker(directory: Path) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {w: [] for w in range(PRODUCERS)}
    for path in _files(directory):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = LINE.search(line)
            if match is not None:
                found[int(match.group(1))].append(int(match.group(2)))
    return found


def _run(tmp_path: Path, name: str, kill_after: float | None, rotate: bool) -> int:
    """Log from the children, SIGKILL the writer ``kill_after`` seconds in; return its pid."""
    log_file = str(tmp_path / "tmp.log")
    instance = f"takeover-{name}"
    cfg = dict(type="RotatingFileHandler", maxBytes=16384, backupCount=100000) if rotate else None
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(instance, log_file=log_file, file_handler_cfg=cfg)
        for handler in logger.handlers:
            if isinstance(handler, TerminalHandler):
                handler.setLevel("ERROR")  # the children print nothing
        children = [ctx.Process(target=_produce, args=(instance, w, go)) for w in range(PRODUCERS)]
        for child in children:
            child.start()
        killed = session.writer_pid  # the sidecar, named as soon as it was started
        assert killed not in (0, os.getpid())
        if kill_after == 0:
            os.kill(killed, signal.SIGKILL)  # before it has even taken the lock, most likely
        go.set()
        if kill_after:
            time.sleep(kill_after)
            os.kill(killed, signal.SIGKILL)
        for child in children:
            child.join(TIMEOUT)
        assert [c.exitcode for c in children] == [0] * PRODUCERS
        assert session.flush(timeout=TIMEOUT)
        # This member's standby took over (it may still be naming itself when
        # the sidecar had written everything before it died).
        deadline = time.monotonic() + TIMEOUT
        while session.writer_pid != os.getpid() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.writer_pid == os.getpid()
    return killed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rotate", [False, True], ids=["plain", "rotating"])
@pytest.mark.parametrize("round_", range(10))
def test_writer_killed_at_a_random_instant_loses_and_repeats_nothing(
    tmp_path: Path, name: str, rotate: bool, round_: int
) -> None:
    kill_after = random.Random(f"{round_}-{rotate}").uniform(0.01, 0.3)
    _run(tmp_path, name, kill_after, rotate)
    found = _lines_by_worker(tmp_path / "tmp")
    for worker, numbers in found.items():
        assert numbers == list(range(LINES)), (worker, kill_after, _summary(numbers))
    if rotate:
        assert len(_files(tmp_path / "tmp")) > 5  # it did roll over, many times


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rotate", [False, True], ids=["plain", "rotating"])
def test_writer_killed_in_the_first_instant_of_a_run_loses_nothing(
    tmp_path: Path, name: str, rotate: bool
) -> None:
    """Killed right after init: the records wait in their rings and the standby writes them."""
    _run(tmp_path, name, 0, rotate)
    for worker, numbers in _lines_by_worker(tmp_path / "tmp").items():
        assert numbers == list(range(LINES)), (worker, _summary(numbers))


def _summary(numbers: list[int]) -> str:
    seen: dict[int, int] = {}
    for n in numbers:
        seen[n] = seen.get(n, 0) + 1
    twice = [n for n, c in seen.items() if c > 1]
    missing = sorted(set(range(LINES)) - set(seen))
    return f"{len(numbers)} lines, repeated {twice[:10]}, missing {missing[:10]}"

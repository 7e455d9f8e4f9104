"""When the log writer wakes and whom it writes for.

An idle writer sleeps on the doorbell and is woken by the record that needs
it (not by its housekeeping timeout); ``init`` does not wait for the sidecar
to start, and nothing logged meanwhile is lost; children that outlive the
member that started them keep their log lines, and their flush succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _shared_workers import child_env, unique_name
from _writer_workers import TIMEOUT, messages_of, numbered

import shmlog
from shmlog import MMLogger
from shmlog.shm.liveness import process_start
from shmlog.shm.session import destroy
from shmlog.writer import serve


def _wait(condition, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.timeout(120)
def test_a_record_logged_into_an_idle_session_wakes_the_writer(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a housekeeping timeout far longer than the test, only the doorbell can wake it."""
    monkeypatch.setattr(serve, "HOUSEKEEPING_SECONDS", 3600.0)
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file, log_writer="thread") as session:
        logger = MMLogger.get_instance(f"idle-{name}", log_file=log_file)
        logger.info("line 0")
        assert session.flush()
        bell = session.shared.doorbell
        for i in range(1, 4):
            assert _wait(lambda: bell._asleep[0] == 1)  # the writer sleeps
            logger.info(f"line {i}")
            assert _wait(lambda i=i: f"line {i}" in " ".join(messages_of(tmp_path / "tmp" / "tmp.log")))


@pytest.mark.timeout(120)
def test_init_names_the_sidecar_at_once_and_nothing_logged_before_it_runs_is_lost(
    tmp_path: Path, name: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file) as session:
        sidecar = session.writer_pid
        assert sidecar != os.getpid()
        with open(f"/proc/{sidecar}/cmdline", "rb") as cmdline:
            assert b"shmlog.writer" in cmdline.read()
        logger = MMLogger.get_instance(f"early-{name}", log_file=log_file)
        for i in range(500):
            logger.info(f"main line {i}")
    assert numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "main") == list(range(500))


ORPHANS = r"""
import os, sys
import shmlog
from shmlog import MMLogger

name, log_file, results = sys.argv[1:4]
session = shmlog.init(name, log_file=log_file)
logger = MMLogger.get_instance("orphans", log_file=log_file)
for handler in logger.handlers[:1]:  # the terminal: only the pipe's one line goes there
    handler.setLevel("ERROR")
logger.info("owner line 0")
assert session.flush()
go_read, go_write = os.pipe()
children = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        os.close(go_write)
        os.read(go_read, 1)  # returns at EOF: when the owner is gone
        os.environ["SHMLOG_WORKER_ID"] = str(worker)
        for i in range(300):
            logger.info(f"orphan{worker} line {i}")
        flushed = shmlog.current_session().flush(timeout=30)
        with open(f"{results}.{worker}", "w") as out:
            out.write(str(flushed))
        os._exit(0)
    children.append(pid)
print("ready", session.writer_pid, *children, flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.timeout(120)
def test_children_that_outlive_their_owner_keep_their_lines(tmp_path: Path) -> None:
    """The owner is SIGKILLed; its forked children then log: every line is written by the
    sidecar, which stays while they live, and their flush succeeds (no silent loss, no
    ten-second wait for a writer that left)."""
    name = unique_name("orphan")
    log_file = str(tmp_path / "tmp.log")
    results = str(tmp_path / "flushed")
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHANS, name, log_file, results],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
    )
    try:
        words = owner.stdout.readline().split()
        assert words[0] == "ready", words
        sidecar, children = int(words[1]), [int(w) for w in words[2:]]
        owner.kill()  # the children see their pipe close, and start logging
        owner.wait(TIMEOUT)
        for child in children:
            assert _wait(lambda c=child: process_start(c) is None)  # exited
        assert _wait(lambda: all(os.path.exists(f"{results}.{w}") for w in range(2)))
        assert [Path(f"{results}.{w}").read_text() for w in range(2)] == ["True", "True"]
        messages = messages_of(tmp_path / "tmp" / "tmp.log")
        for worker in range(2):
            assert numbered(messages, f"[worker{worker}] orphan{worker}") == list(range(300))
        # Nobody of the session is left: the sidecar exits.
        assert _wait(lambda: process_start(sidecar) is None)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(TIMEOUT)
        destroy(name)  # its last member was killed: the session is stale


@pytest.mark.timeout(120)
def test_a_sidecar_signalled_to_stop_writes_what_is_there(tmp_path: Path, name: str) -> None:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"term-{name}", log_file=log_file)
        logger.info("main line 0")
        assert session.flush()
        sidecar = session.writer_pid
        os.kill(sidecar, signal.SIGTERM)
        assert _wait(lambda: session.writer_pid == os.getpid())  # the standby took over
        logger.info("main line 1")
    assert numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "main") == [0, 1]

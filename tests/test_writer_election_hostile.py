"""Nobody else can stop a session's log writer from being elected.

The election lock is a lock on the session's own control segment (mode
0600, checked owner), not a file of its own: another user can neither open
it nor plant anything that the election would use, whether a file held
locked at the name the lock file used to have, or a symlink there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _shared_workers import child_env
from _writer_workers import TIMEOUT, messages_of, numbered

import shmlog
from shmlog import MMLogger
from shmlog.shm.names import control_name, prefix

OTHER_UID = 4242

HOLDER = r"""
import fcntl, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""

OPENER = r"""
import os, sys
try:
    os.open(sys.argv[1], os.O_RDONLY)
except PermissionError:
    print("refused")
else:
    print("opened")
"""


def _as_other_user(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups",
         sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(),
    )


needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)


def _log_and_count(tmp_path: Path, name: str) -> tuple[int, list[int]]:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"hostile-{name}", log_file=log_file)
        for i in range(50):
            logger.info(f"main line {i}")
        assert session.flush(timeout=TIMEOUT)
        writer = session.writer_pid
    return writer, numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "main")


@pytest.mark.timeout(120)
@needs_setpriv
def test_a_lock_file_another_user_planted_and_holds_changes_nothing(tmp_path: Path, name: str) -> None:
    planted = f"/dev/shm/{prefix(name)}writer.lock"
    holder = _as_other_user(HOLDER, planted)
    try:
        assert holder.stdout.readline().split() == ["holding"]
        writer, numbers = _log_and_count(tmp_path, name)
        assert writer not in (0, os.getpid()) and numbers == list(range(50))
    finally:
        holder.kill()
        holder.wait(TIMEOUT)
        if os.path.lexists(planted):
            os.unlink(planted)


@pytest.mark.timeout(120)
def test_a_symlink_at_the_old_lock_path_changes_nothing(tmp_path: Path, name: str) -> None:
    planted = f"/dev/shm/{prefix(name)}writer.lock"
    target = tmp_path / "target"
    os.symlink(target, planted)
    try:
        writer, numbers = _log_and_count(tmp_path, name)
        assert writer not in (0, os.getpid()) and numbers == list(range(50))
        assert not target.exists()  # nothing followed the link
    finally:
        if os.path.lexists(planted):
            os.unlink(planted)


@pytest.mark.timeout(120)
@needs_setpriv
def test_another_user_cannot_open_the_segment_the_lock_lives_on(name: str) -> None:
    with shmlog.init(name, log_writer="none"):
        opener = _as_other_user(OPENER, f"/dev/shm{control_name(name)}")
        out, _ = opener.communicate(timeout=TIMEOUT)
    assert out.split() == ["refused"]

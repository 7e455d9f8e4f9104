"""Entries other users (or anyone) put where a session or a log file will be.

/dev/shm is writable by every user, so names a session will use can be taken
first: by another user's file, or by a symbolic link.  shmlog must never use,
remove or follow such an entry, never fail to tear its own session down
because of one, and refuse with an error that names the path and its owner.

The multi-user tests run the victim and the planter as two non-root uids
(root may remove anything, which would hide the bug) through ``setpriv``,
and skip where that is not possible.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _shared_workers import SHM, TIMEOUT, child_env, shm_entries

import shmlog
from shmlog import MessageHub
from shmlog.shm.segment import SegmentError

pytestmark = pytest.mark.timeout(60)

VICTIM, PLANTER = 1234, 1235


def _as_user(uid: int, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=TIMEOUT, env=child_env(HOME="/"), check=False,
    )


def _needs_two_users() -> None:
    if os.geteuid() != 0:
        pytest.skip("running processes as two other uids needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    probe = _as_user(VICTIM, "import shmlog")
    if probe.returncode != 0:
        pytest.skip(f"uid {VICTIM} cannot import shmlog here: {probe.stderr.strip()[-200:]}")


PLANT = r"""
import os, sys
for entry in sys.argv[1:]:
    fd = os.open("/dev/shm/" + entry, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"planted")
    os.close(fd)
"""

VICTIM_SCRIPT = r"""
import logging, os, sys
import shmlog
from shmlog import MessageHub, MMLogger

name = sys.argv[1]
session = shmlog.init(name, log_writer="thread")
hub = MessageHub.get_instance("victim")
for what, call in (("SCALAR", lambda: hub.update_scalar("k", 1.0)),
                   ("INFO", lambda: hub.update_info("epoch", 1))):
    try:
        call()
        print(what, "stored", flush=True)
    except Exception as exc:
        print(what, type(exc).__name__, exc, flush=True)
MMLogger.get_instance("victim", log_file=sys.argv[2]).info("a line")
try:
    session.close()
    print("CLOSE ok", flush=True)
except BaseException as exc:
    print("CLOSE", type(exc).__name__, exc, flush=True)
"""


def test_files_planted_by_another_uid_are_never_used_removed_or_fatal(name: str) -> None:
    """uid 1235 plants @zzz, @r0, @i0, @l0 under uid 1234's session: clear errors, clean close."""
    _needs_two_users()
    prefix = f"shmlog-{VICTIM}-{name}@"
    planted = [prefix + part for part in ("zzz", "r0", "i0", "l0")]
    logs = Path(tempfile.mkdtemp(prefix="shmlog-victim-"))
    os.chown(logs, VICTIM, VICTIM)
    try:
        plant = _as_user(PLANTER, PLANT, *planted)
        assert plant.returncode == 0, plant.stderr
        victim = _as_user(VICTIM, VICTIM_SCRIPT, name, str(logs / "run.log"))
        assert victim.returncode == 0, victim.stderr
        lines = dict(line.split(" ", 1) for line in victim.stdout.splitlines())
        for what, part in (("SCALAR", "r0"), ("INFO", "i0")):
            assert lines[what] == (
                f"SegmentError shmlog session {name!r} cannot add its segment /{prefix}{part}: "
                f"{SHM}/{prefix}{part} belongs to uid {PLANTER}, not to this process's uid "
                f"{VICTIM}; shmlog never uses or removes another user's files. Choose another "
                f"session name, or ask uid {PLANTER} to remove it"
            )
        # The log line could not be shipped (its route goes to runtime info, the
        # line to a record ring): the error says why, and where.
        assert "--- Logging error ---" in victim.stderr
        assert re.search(rf"{SHM}/{re.escape(prefix)}(i0|l0) belongs to uid {PLANTER}",
                         victim.stderr), victim.stderr
        assert lines["CLOSE"] == "ok"
        left = sorted(e for e in os.listdir(SHM) if e.startswith(prefix))
        assert left == sorted(planted), "the victim's own segments were left behind"
        for entry in planted:
            path = os.path.join(SHM, entry)
            assert os.stat(path).st_uid == PLANTER
            assert Path(path).read_bytes() == b"planted"
    finally:
        shutil.rmtree(logs)
        for entry in planted:
            if os.path.lexists(os.path.join(SHM, entry)):
                os.unlink(os.path.join(SHM, entry))


def test_symlinks_at_segment_names_are_refused_never_followed(name: str, tmp_path: Path) -> None:
    """A link at @ctl or @r0 gives a SegmentError naming it; its target is never created."""
    target = tmp_path / "target"
    prefix = os.path.join(SHM, f"shmlog-{os.getuid()}-{name}@")
    link = prefix + "ctl"
    os.symlink(target, link)
    try:
        with pytest.raises(SegmentError) as refused:
            shmlog.init(name, log_writer="none")
        assert str(refused.value) == (
            f"cannot attach shared memory /{os.path.basename(link)}: {link} is a symbolic link "
            f"(to {str(target)!r}, made by uid {os.getuid()}); shmlog never follows links in "
            f"{SHM}. Remove it, or choose another session name"
        )
        assert os.path.islink(link) and not target.exists()
    finally:
        os.unlink(link)

    link = prefix + "r0"
    os.symlink(target, link)
    try:
        with shmlog.init(name, log_writer="none"):
            hub = MessageHub.get_instance("links")
            with pytest.raises(SegmentError, match=f"{link} is a symbolic link"):
                hub.update_scalar("k", 1.0)
            hub.update_info("still", "works")
            assert hub.get_info("still") == "works"
        assert os.path.islink(link) and not target.exists()
        assert shm_entries(name) == ["r0"]  # only the link: the session is gone
    finally:
        os.unlink(link)

"""Entries other users (or anyone) put where a session or a log file will be.

/dev/shm is writable by every user, so names a session will use can be taken
first: by another user's file, or by a symbolic link.  shmlog must never use,
remove or follow such an entry, never fail to tear its own session down
because of one, and refuse with an error that names the path and its owner.
A log directory other users can write to is the same kind of place.

The multi-user tests run the victim and the planter as two non-root uids
(root may remove anything, which would hide the bug) through ``setpriv``,
and skip where that is not possible.
"""

from __future__ import annotations

import logging
import logging.handlers
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
from shmlog.errors import LogPathError, SegmentError
from shmlog.format.files import build_file_handler

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


def test_log_file_links_in_a_directory_others_can_write_are_refused(tmp_path: Path) -> None:
    """In a mode-1777 directory a planted link is refused by every handler; in our own, followed."""
    shared = tmp_path / "shared"
    (shared / "run").mkdir(parents=True)
    for directory in (shared, shared / "run"):
        directory.chmod(0o1777)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    link = shared / "run" / "run.log"
    link.symlink_to(victim)
    cfgs = [None, {"type": "RotatingFileHandler", "maxBytes": 100, "backupCount": 2}]
    for cfg in cfgs:
        with pytest.raises(LogPathError) as refused:
            build_file_handler(shared / "run.log", 0, 1, cfg=cfg)
        message = str(refused.value)
        assert message.startswith(f"log file {link}: is a symbolic link (to {str(victim)!r}) in ")
        assert "(mode 1777, owner uid" in message and "Remove the link" in message
    assert victim.read_text() == "keep me\n"

    # A linked log directory in a shared directory is refused too.
    (shared / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(LogPathError, match=f"{shared / 'linked'} is a symbolic link"):
        build_file_handler(shared / "linked.log", 0, 1)
    assert not (tmp_path / "elsewhere").exists()

    # A real file there is written (and rotated) as usual.
    link.unlink()
    handler = build_file_handler(shared / "run.log", 0, 1, cfg=cfgs[1])
    try:
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        for i in range(20):
            handler.emit(logging.makeLogRecord({"msg": f"line {i}", "levelno": 20,
                                                "levelname": "INFO", "name": "mmengine"}))
    finally:
        handler.close()
    assert "line 19" in link.read_text() and (shared / "run" / "run.log.1").exists()

    # In a directory only we can write, a link is ours and is followed.
    own = tmp_path / "own" / "run"
    own.mkdir(parents=True)
    (own / "run.log").symlink_to(victim)
    handler = build_file_handler(tmp_path / "own" / "run.log", 0, 1, mode="a")
    try:
        assert type(handler) is logging.FileHandler
        handler.emit(logging.makeLogRecord({"msg": "through the link", "levelno": 20,
                                            "levelname": "INFO", "name": "mmengine"}))
    finally:
        handler.close()
    assert victim.read_text().startswith("keep me\n") and "through the link" in victim.read_text()


def test_an_export_file_link_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """scalars.jsonl follows the log files' rule: no link followed where others can write."""
    from shmlog.format.files import open_output

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (shared / "scalars.jsonl").symlink_to(victim)
    with pytest.raises(LogPathError, match="is a symbolic link"):
        open_output(str(shared / "scalars.jsonl"))
    assert victim.read_text() == "keep me\n"
    own = tmp_path / "own"
    own.mkdir()
    (own / "scalars.jsonl").symlink_to(victim)
    with open_output(str(own / "scalars.jsonl")) as out:  # ours: followed
        out.write("more\n")
    assert victim.read_text() == "keep me\nmore\n"

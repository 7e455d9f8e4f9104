"""Sessions under faults: killed writers, a full /dev/shm, foreign and broken segments.

Shared memory outlives the processes that use it, so every failure here must
leave the session usable (or refuse it with a message that says why), and
never crash a process with SIGBUS or hang it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from _shared_workers import (
    SHM,
    TIMEOUT,
    child_env,
    entry_prefix,
    join_all,
    log_forever,
    log_n,
    parse_ls,
    popen_python,
    private_shm_command,
    private_shm_unavailable,
    run_cli,
    shm_entries,
)

import shmlog
from shmlog import MessageHub
from shmlog.errors import SegmentError, SessionError
from shmlog.shm import info, lifecycle
from shmlog.shm import session as shm_session
from shmlog.shm.control import CONTROL_BYTES
from shmlog.shm.segment import HEADER, KIND_CONTROL, LAYOUT_VERSION, MAGIC

pytestmark = pytest.mark.timeout(60)


# -- writers killed mid-update ----------------------------------------------------------


def test_writers_sigkilled_mid_update_leave_consistent_rings(name: str) -> None:
    """20 workers SIGKILLed while logging: one taken-over ring, no torn value, hub still works."""
    value, count, kills = 7.0, 2.0, 20
    with shmlog.init(name, capacity=512):
        hub = MessageHub.get_instance("faults")
        ctx = multiprocessing.get_context("fork")
        waited_for_running = 0
        for i in range(kills):
            ready, running = ctx.Event(), ctx.Event()
            child = ctx.Process(
                target=log_forever, args=("faults", "k", value, count, ready, running)
            )
            child.start()
            try:
                # Half the kills land in the first update (writer slot and ring
                # being claimed under the session lock), half in the hot loop.
                event = running if i % 2 else ready
                assert event.wait(TIMEOUT), "child never started logging"
                waited_for_running += event is running
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.join(TIMEOUT)
            assert child.exitcode == -signal.SIGKILL

        buffer = hub.get_scalar("k")
        assert set(buffer.per_writer()) == {"worker0"}, "a restarted worker got a second ring"
        totals = buffer.totals()
        n = totals.updates
        assert n >= 100 * waited_for_running
        assert totals.value_sum == value * n
        assert totals.count_sum == count * n
        assert (totals.minimum, totals.maximum) == (value, value)
        values, counts = buffer.data
        assert len(values) == min(n, 512)
        assert np.all(values == value) and np.all(counts == count)

        hub.update_scalar("k", value, count)  # the session lock was not left held
        assert hub.get_scalar("k").totals().updates == n + 1
        after = ctx.Process(target=log_n, args=("faults", "k", value, count, 100, 0))
        after.start()
        join_all([after])
        split = hub.get_scalar("k").per_writer()
        assert set(split) == {"main", "worker0"}
        assert split["worker0"].totals().updates == n + 100


# -- a /dev/shm that is too small ----------------------------------------------------------

TINY_SCRIPT = r"""
import os
import shmlog
from shmlog import MessageHub
from shmlog.errors import ShmFullError

logged = 0
try:
    with shmlog.init("tiny", capacity=4096, segment_bytes=256 << 10):
        hub = MessageHub.get_instance("tiny")
        try:
            for k in range(40):
                hub.update_scalar(f"k{k}", k)
                logged += 1
        except ShmFullError as exc:
            print("SHMFULL", exc, flush=True)
        print("LOGGED", logged, flush=True)
        assert [hub.get_scalar(f"k{k}").current() for k in range(logged)] == list(range(logged))
        hub.update_scalar("k0", 100.0)
        print("STILL-WORKS", hub.get_scalar("k0").totals().updates, flush=True)
        try:
            hub.update_info("notes", "x" * 1000)
        except ShmFullError as exc:
            print("INFO-SHMFULL", exc, flush=True)
except ShmFullError as exc:
    print("SHMFULL-AT-INIT", exc, flush=True)
print("LEFT", sorted(os.listdir("/dev/shm")), flush=True)
"""

NEEDS = re.compile(r"needs (\d+) bytes and (\d+) bytes are available")


def _run_in_private_shm(size: str, script: str) -> subprocess.CompletedProcess:
    reason = private_shm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return subprocess.run(
        private_shm_command(size, sys.executable, "-c", script),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=child_env(),
        check=False,
    )


def _check_full_message(line: str) -> None:
    found = NEEDS.search(line)
    assert found, f"message does not name the bytes needed and available: {line}"
    needed, available = map(int, found.groups())
    assert needed > available


def test_full_dev_shm_raises_shm_full_error_not_sigbus() -> None:
    """In a 1 MiB /dev/shm new rings fail with ShmFullError; what fit keeps working."""
    done = _run_in_private_shm("1m", TINY_SCRIPT)
    assert done.returncode != -signal.SIGBUS, "killed by SIGBUS: pages were not reserved"
    assert done.returncode == 0, done.stderr
    lines = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
    print(lines.get("SHMFULL"))
    assert "SHMFULL" in lines, done.stdout
    _check_full_message(lines["SHMFULL"])
    logged = int(lines["LOGGED"].split()[1])
    assert 0 < logged < 40
    assert lines["STILL-WORKS"] == "STILL-WORKS 2"
    assert "INFO-SHMFULL" in lines, done.stdout
    _check_full_message(lines["INFO-SHMFULL"])
    assert lines["LEFT"] == "LEFT []", "segments left behind after close"


def test_dev_shm_too_small_for_the_control_segment() -> None:
    """When not even the control segment fits, init itself raises ShmFullError and leaves nothing."""
    done = _run_in_private_shm("32k", TINY_SCRIPT)
    assert done.returncode == 0, done.stderr
    lines = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
    assert "SHMFULL-AT-INIT" in lines, done.stdout
    _check_full_message(lines["SHMFULL-AT-INIT"])
    assert lines["LEFT"] == "LEFT []"


# -- segments shmlog did not make -------------------------------------------------------------


def _plant(name: str, content: bytes, mode: int = 0o600, owner: int | None = None) -> str:
    path = os.path.join(SHM, entry_prefix(name) + "ctl")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        os.write(fd, content)
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner, owner)
    finally:
        os.close(fd)
    return path


def _control_header(size: int = 80_000) -> bytes:
    header = HEADER.pack(MAGIC, LAYOUT_VERSION, KIND_CONTROL, size, 1, os.getuid())
    return header + bytes(size - len(header))


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file owned by another uid needs root")
def test_segment_of_another_uid_is_refused(name: str) -> None:
    """A control segment owned by uid 65534 under our session's name is refused, not used."""
    path = _plant(name, _control_header(), owner=65534)
    try:
        with pytest.raises(SegmentError, match=r"belongs to uid 65534") as info:
            shmlog.init(name)
        assert f"uid {os.getuid()}" in str(info.value)
        assert os.stat(path).st_uid == 65534, "the foreign file was replaced"
    finally:
        os.unlink(path)
    assert shm_entries(name) == []


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (b"garbage!" * 1024, 0o600, "not a usable shmlog segment: its header starts b'garbage!'"),
        (_control_header()[:8] + b"\xff" * 4 + _control_header()[12:], 0o600,
         "not a usable shmlog segment: it has layout version"),
        (_control_header(), 0o644, "has mode 644"),
        (b"tiny", 0o600, "too small to be a shmlog segment"),
    ],
    ids=["garbage", "other-layout", "mode-644", "too-small"],
)
def test_unusable_segment_is_refused_with_a_clear_error(
    name: str, content: bytes, mode: int, message: str
) -> None:
    """A file under our session's name that shmlog did not make raises SegmentError saying why."""
    path = _plant(name, content, mode)
    try:
        with pytest.raises(SegmentError, match=re.escape(message)):
            shmlog.init(name)
        with open(path, "rb") as f:
            assert f.read() == content, "the refused file was modified"
    finally:
        os.unlink(path)
    assert shm_entries(name) == []


def test_control_segment_with_a_valid_header_and_no_state_is_refused_at_once(name: str) -> None:
    """A control segment whose state is neither ready nor closed: a prompt SegmentError, then clean."""
    path = _plant(name, _control_header(CONTROL_BYTES))
    try:
        with pytest.raises(SegmentError) as refused:
            shmlog.init(name, log_writer="none")  # SessionError 'timed out' if it waited
        message = str(refused.value)
        assert message.startswith(f"shared memory /{os.path.basename(path)} is not a usable ")
        assert "its state is 0, not 1 (ready) or 2 (closed)" in message
        assert "'shmlog clean'" in message
        with pytest.raises(SegmentError, match="its state is 0"):
            shm_session.SessionSegments.open(name, member=False, create=False)
        row = parse_ls(run_cli("ls").stdout)[name]
        assert row["STATUS"].startswith("broken: ") and "its state is 0" in row["STATUS"]
        assert f"removed {name}" in run_cli("clean").stdout.splitlines()
        assert shm_entries(name) == []
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_abandoned_half_created_session_is_replaced_or_refused_clearly(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero-filled control segment (creator killed mid-creation) does not hang init()."""
    monkeypatch.setattr(lifecycle, "_OPEN_TIMEOUT", 1.0)
    path = _plant(name, bytes(80_000))
    try:
        try:
            with shmlog.init(name) as session:
                MessageHub.get_instance("abandoned").update_scalar("k", 1.0)
                assert session.shared.control.read_state().state == 1
        except SegmentError as exc:
            assert "shmlog clean" in str(exc)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        shm_session.destroy(name)


TORN_INFO_READER = r"""
import signal
from shmlog import MessageHub

signal.alarm(5)  # a reader spinning on the entry dies of SIGALRM
hub = MessageHub.get_instance("torn")
print("READ", hub.get_info("epoch", "default"), flush=True)
print("KEYS", sorted(hub.runtime_info), flush=True)
hub.update_info("epoch", 4)
print("HEALED", hub.get_info("epoch"), flush=True)
"""


def test_info_entry_left_mid_rewrite_by_a_killed_writer_does_not_hang_readers(name: str) -> None:
    """An info value a killed writer left half-rewritten reads as unset, and the next set heals it."""
    with shmlog.init(name) as session:
        hub = MessageHub.get_instance("torn")
        hub.update_info("epoch", 3)
        hub.update_info("other", "kept")
        shared = session.shared
        index, offset = shared.info._index["torn\x1fepoch"]
        buf = shared.info.segments[index].buf
        # What info.rewrite leaves when its process dies after its first store.
        seq = info._u(buf, offset, 8)
        info._put(buf, offset, 8, seq + 1)
        reader = popen_python(TORN_INFO_READER, env=child_env(SHMLOG_SESSION=name))
        out, err = reader.communicate(timeout=TIMEOUT)
        assert reader.returncode == 0, f"reader hung or failed ({reader.returncode}): {err}"
        assert out.splitlines() == ["READ default", "KEYS ['other']", "HEALED 4"]
        assert hub.get_info("epoch") == 4
        assert dict(hub.runtime_info) == {"epoch": 4, "other": "kept"}

        info._put(buf, offset, 8, info._u(buf, offset, 8) + 1)  # torn again
        assert hub.pop_info("epoch", "gone") == "gone"
        assert hub.get_info("epoch") is None
        assert dict(hub.runtime_info) == {"other": "kept"}


# -- children outliving the session ---------------------------------------------------------------


def test_child_logging_after_the_session_closed_leaves_nothing_behind(name: str) -> None:
    """A worker logging new keys after the last member closed gets SessionError and leaks nothing."""
    ctx = multiprocessing.get_context("fork")
    attached, go = ctx.Event(), ctx.Event()
    with shmlog.init(name, capacity=50_000):  # one ring per segment: every new key needs one
        child = ctx.Process(target=_log_new_keys_when_told, args=(attached, go))
        child.start()
        assert attached.wait(TIMEOUT)
    try:
        assert shm_entries(name) == []
        go.set()
        join_all([child])  # exit code 0: the child got the SessionError it expects
        assert shm_entries(name) == [], "segments created after the session was removed"
    finally:
        if child.exitcode is None:
            child.kill()
            child.join(TIMEOUT)
        shm_session.destroy(name)


def _log_new_keys_when_told(attached, go) -> None:
    hub = MessageHub.get_instance("orphan")
    hub.update_scalar("early", 1.0)
    attached.set()
    go.wait(TIMEOUT)
    hub.update_scalar("early", 2.0)  # its own ring is still mapped: harmless
    with pytest.raises(SessionError, match="was closed by its last member"):
        for k in range(30):
            hub.update_scalar(f"late/{k}", 1.0)


CLOSED_BUT_NOT_UNLINKED = r"""
import os, sys
import shmlog
from shmlog.shm.control import STATE_CLOSED

session = shmlog.init(sys.argv[1], log_writer="none")
with session.shared.control:
    session.shared.control.write_state(state=STATE_CLOSED)
os._exit(0)  # dies between marking the session closed and unlinking it
"""


def test_session_left_closed_by_a_dead_member_is_replaced(name: str) -> None:
    """A member killed halfway through removing its session does not block the name."""
    import subprocess
    import sys
    import time

    subprocess.run([sys.executable, "-c", CLOSED_BUT_NOT_UNLINKED, name], check=True,
                   timeout=60)
    assert shm_entries(name), "the dead member's segments should still be there"
    started = time.monotonic()
    with shmlog.init(name, log_writer="none") as session:
        assert time.monotonic() - started < 5
        MessageHub.get_instance("after").update_scalar("k", 1.0)
        assert session.shared.control.read_state().state == 1
    assert shm_entries(name) == []

"""The ``shmlog`` command: listing sessions and cleaning up after dead ones.

``shmlog ls`` must tell live sessions from stale ones (every member died) and
``shmlog clean`` must remove only the stale ones; ``clean --all`` removes all
of this user's.  Commands run as real subprocesses, as a user would run them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from ast import literal_eval
from pathlib import Path

import pytest
from _shared_workers import (
    LS_COLUMNS,
    SHM,
    TIMEOUT,
    child_env,
    entry_prefix,
    expect_line,
    parse_ls,
    popen_python,
    private_shm_command,
    private_shm_unavailable,
    run_cli,
    shm_bytes,
    shm_entries,
    unique_name,
)

import shmlog
from shmlog import MessageHub
from shmlog.shm.session import destroy

pytestmark = pytest.mark.timeout(60)

OWNER_SCRIPT = r"""
import sys
import shmlog
from shmlog import MessageHub

shmlog.init(sys.argv[1])
MessageHub.get_instance("cli").update_scalar("old/key", 1.0)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHMLOG_SESSION", raising=False)


def _killed_owner(name: str) -> None:
    """Make ``name`` a stale session: its only member logs a key and is SIGKILLed."""
    owner = popen_python(OWNER_SCRIPT, name)
    try:
        expect_line(owner, "ready")
        assert parse_ls(run_cli("ls").stdout)[name]["STATUS"] == "alive"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=TIMEOUT)
    assert owner.returncode == -signal.SIGKILL


def _generation(name: str) -> int:
    with open(os.path.join(SHM, entry_prefix(name) + "ctl"), "rb") as f:
        return int.from_bytes(f.read(32)[24:32], "little")


# -- ls --------------------------------------------------------------------------------------


def test_ls_lists_a_live_session_with_every_column() -> None:
    """``ls`` prints NAME OWNER STATUS MEMBERS WRITERS KEYS BYTES AGE METRICS for a live session."""
    name = unique_name()
    with shmlog.init(name):
        hub = MessageHub.get_instance("cli-ls")
        hub.update_scalar("a", 1.0)
        hub.update_scalar("b", 2.0)
        done = run_cli("ls")
        assert done.stdout.splitlines()[0].split() == LS_COLUMNS
        row = parse_ls(done.stdout)[name]
        assert row["OWNER"] == str(os.getpid())
        assert row["STATUS"] == "alive"
        assert (row["MEMBERS"], row["WRITERS"], row["KEYS"]) == ("1", "1", "2")
        size = re.fullmatch(r"(\d+(?:\.\d)?) (B|KiB|MiB|GiB)", row["BYTES"])
        assert size, row["BYTES"]
        scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[size.group(2)]
        assert abs(float(size.group(1)) * scale - shm_bytes(name)) <= 0.05 * scale
        assert re.fullmatch(r"\d+s", row["AGE"]), row["AGE"]
        assert row["METRICS"] == "-"  # no metrics_port: no endpoint
    assert name not in parse_ls(run_cli("ls").stdout)


def test_console_script_is_installed() -> None:
    """The ``shmlog`` console script sits next to the interpreter and runs ``ls``."""
    script = Path(sys.executable).parent / "shmlog"
    assert script.is_file() and os.access(script, os.X_OK)
    name = unique_name()
    with shmlog.init(name):
        done = subprocess.run(
            [str(script), "ls"], capture_output=True, text=True, timeout=TIMEOUT,
            env=child_env(), check=False,
        )
        assert done.returncode == 0, done.stderr
        assert parse_ls(done.stdout)[name]["STATUS"] == "alive"
    usage = subprocess.run(
        [str(script)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert usage.returncode == 2 and "usage: shmlog" in usage.stderr


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "shmlog", "--version"], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert (done.returncode, done.stdout) == (0, f"shmlog {shmlog.__version__}\n"), done.stderr


def test_ls_reports_a_broken_session_without_failing() -> None:
    """A control segment shmlog cannot read shows as 'broken: <why>' instead of crashing ls."""
    name = unique_name()
    path = os.path.join(SHM, entry_prefix(name) + "ctl")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"not shmlog" * 100)
        os.close(fd)
        row = parse_ls(run_cli("ls").stdout)[name]
        assert row["STATUS"].startswith("broken: ")
        assert "not a usable shmlog segment" in row["STATUS"]
    finally:
        if os.path.exists(path):
            os.unlink(path)


# -- stale sessions and clean ------------------------------------------------------------------


def test_killed_owner_leaves_a_stale_session_that_clean_removes() -> None:
    """A SIGKILLed owner's session shows 'stale'; ``clean`` removes it and spares live ones."""
    stale, live = unique_name("stale"), unique_name("live")
    with shmlog.init(live):
        _killed_owner(stale)
        rows = parse_ls(run_cli("ls").stdout)
        assert rows[stale]["STATUS"] == "stale"
        assert (rows[stale]["MEMBERS"], rows[stale]["WRITERS"], rows[stale]["KEYS"]) == (
            "0", "0", "1",
        )
        assert rows[live]["STATUS"] == "alive"
        assert shm_entries(stale) != []

        done = run_cli("clean")
        assert f"removed {stale}" in done.stdout.splitlines()
        assert f"removed {live}" not in done.stdout
        assert shm_entries(stale) == []
        assert "ctl" in shm_entries(live)
        rows = parse_ls(run_cli("ls").stdout)
        assert stale not in rows
        assert rows[live]["STATUS"] == "alive"
        MessageHub.get_instance("cli-live").update_scalar("still", 1.0)
    assert shm_entries(live) == []


def cli(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m shmlog args...``, whatever its exit status."""
    return subprocess.run([sys.executable, "-m", "shmlog", *args], capture_output=True,
                          text=True, env=child_env(), timeout=TIMEOUT, check=False)


def test_clean_by_name_and_dry_run() -> None:
    """``clean NAME`` removes that stale session only; ``-n`` removes nothing; live ones stay."""
    first, second, live = unique_name("stale1"), unique_name("stale2"), unique_name("live")
    try:
        with shmlog.init(live):
            _killed_owner(first)
            _killed_owner(second)
            before = {name: shm_entries(name) for name in (first, second, live)}

            lines = run_cli("clean", "--dry-run").stdout.splitlines()
            assert f"would remove {first} (stale)" in lines
            assert f"would remove {second} (stale)" in lines
            assert not any(live in line for line in lines)
            assert run_cli("clean", "-n", first).stdout == f"would remove {first} (stale)\n"
            assert f"would remove {live} (alive)" in run_cli("clean", "-n", "--all").stdout
            assert {name: shm_entries(name) for name in before} == before

            assert run_cli("clean", first).stdout == f"removed {first}\n"
            assert shm_entries(first) == []
            assert shm_entries(second) == before[second]

            refused = cli(["clean", "--force", live, second])
            assert refused.returncode == 1
            assert refused.stdout == f"removed {second}\n"
            assert refused.stderr == (
                f"shmlog clean: not removing {live}: alive (pids {os.getpid()}): "
                f"stop its processes first\n"
            )
            assert shm_entries(second) == []
            assert "ctl" in shm_entries(live)

            gone = cli(["clean", first])
            assert (gone.returncode, gone.stdout) == (1, "")
            assert f"shmlog clean: no shmlog session named {first!r}" in gone.stderr
            bad = cli(["clean", "no/such"])
            assert bad.returncode == 1 and "session name 'no/such': expected" in bad.stderr
            both = cli(["clean", "--all", live])
            assert both.returncode == 2 and "name sessions or give --all, not both" in both.stderr
            MessageHub.get_instance("cli-live").update_scalar("still", 1.0)
    finally:
        for name in (first, second):
            destroy(name)  # a no-op unless something above failed
    assert shm_entries(live) == []


def test_init_replaces_a_stale_session() -> None:
    """``shmlog.init(stale_name)`` starts a fresh session in place of the dead one."""
    name = unique_name("stale")
    _killed_owner(name)
    old = _generation(name)
    try:
        with shmlog.init(name) as session:
            assert session.shared.generation != old
            hub = MessageHub.get_instance("cli")
            assert "old/key" not in hub.log_scalars
            hub.update_scalar("new/key", 2.0)
            assert list(hub.log_scalars) == ["new/key"]
            row = parse_ls(run_cli("ls").stdout)[name]
            assert (row["STATUS"], row["OWNER"], row["MEMBERS"]) == ("alive", str(os.getpid()), "1")
        assert shm_entries(name) == []
    finally:
        if shm_entries(name):
            destroy(name)


ORPHANING_MEMBER = r"""
import os, sys
import shmlog
from shmlog import MessageHub

shmlog.init(sys.argv[1], log_writer="none")
hub = MessageHub.get_instance("orphans")
for index in range(2):
    go = os.path.join(sys.argv[2], f"go{index}")
    os.mkfifo(go)
    if os.fork() == 0:  # a child that outlives its parent, as DataLoader workers can
        hub.update_scalar("k", 1.0)
        os.write(1, f"child {os.getpid()}\n".encode())
        with open(go, "rb", buffering=0) as told:
            told.read(1)  # go on: log new keys (new segments)
            try:
                for i in range(20):
                    hub.update_scalar(f"late/{index}/{i}", 1.0)
                os.write(1, b"logged ok\n")
            except Exception as exc:
                os.write(1, f"logged {type(exc).__name__}: {exc}\n".encode())
            told.read(1)  # end of file: exit
        os._exit(0)
print("member", os.getpid(), flush=True)
sys.stdin.read()
"""

ADOPTER = r"""
import sys, warnings
import shmlog
from shmlog import MessageHub

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    session = shmlog.init(sys.argv[1], log_writer="none")
print("warned", " | ".join(str(w.message) for w in caught), flush=True)
print("generation", session.shared.generation, flush=True)
print("keys", len(MessageHub.get_instance("orphans").log_scalars), flush=True)
sys.stdin.read()
"""


def test_orphaned_session_is_spared_by_clean_joined_by_init_removed_by_force(
    tmp_path: Path,
) -> None:
    """Members dead, children writing: 'orphaned' with their pids; clean spares it, init joins it."""
    name = unique_name("orphaned")
    member = popen_python(ORPHANING_MEMBER, name, str(tmp_path))
    adopter = None
    go: list[int] = []
    children: list[int] = []
    try:
        lines = [member.stdout.readline().split() for _ in range(3)]
        children = sorted(int(pid) for what, pid in lines if what == "child")
        assert len(children) == 2, lines
        go = [os.open(tmp_path / f"go{index}", os.O_WRONLY) for index in range(2)]
        member.kill()
        member.wait(TIMEOUT)
        generation = _generation(name)

        row = parse_ls(run_cli("ls").stdout)[name]
        assert row["STATUS"] == f"orphaned (pids {children[0]} {children[1]})"
        assert (row["MEMBERS"], row["WRITERS"]) == ("0", "2")
        assert run_cli("clean").stdout.splitlines() == [
            "nothing to clean",
            "1 orphaned session left (no member, but processes still write to it; "
            "'shmlog ls' shows the pids): 'shmlog clean --force' removes it",
        ]
        refused = cli(["clean", name])
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr == (
            f"shmlog clean: not removing {name}: orphaned (pids {children[0]} {children[1]}): "
            f"processes still write to it; --force removes it and cuts them off\n"
        )
        assert run_cli("clean", "--force", "-n", name).stdout == (
            f"would remove {name} (orphaned (pids {children[0]} {children[1]}))\n"
        )
        assert "ctl" in shm_entries(name)
        os.write(go[0], b"x")  # the session was spared: new keys still work
        assert member.stdout.readline() == "logged ok\n"

        adopter = popen_python(ADOPTER, name)
        warned = expect_line(adopter, "warned")
        assert f"shmlog session {name!r} has no member left, but processes still write" in warned
        assert f"(pids {children[0]}, {children[1]})" in warned
        assert "'shmlog clean --force'" in warned
        assert expect_line(adopter, "generation") == f"generation {generation}"  # joined
        assert expect_line(adopter, "keys") == "keys 21"
        assert parse_ls(run_cli("ls").stdout)[name]["STATUS"] == "alive"
        adopter.kill()
        adopter.wait(TIMEOUT)

        assert parse_ls(run_cli("ls").stdout)[name]["STATUS"].startswith("orphaned (pids ")
        assert run_cli("clean", "--force", name).stdout == f"removed {name}\n"
        assert shm_entries(name) == []
        os.write(go[1], b"x")  # what --force means for the children still writing
        assert member.stdout.readline().startswith("logged SessionError: ")
    finally:
        for proc in (member, adopter):
            if proc is not None and proc.poll() is None:
                proc.kill()
        for fd in go:
            os.close(fd)  # end of file: the children exit
        if not go:  # they never got as far as waiting for it
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        member.communicate(timeout=TIMEOUT)
        if shm_entries(name):
            destroy(name)


CLEAN_ALL_SCRIPT = r"""
import os, subprocess, sys
import shmlog

def shmlog_cli(*args):
    done = subprocess.run([sys.executable, "-m", "shmlog", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().replace("\n", "|")

live = shmlog.init("live")
owner = subprocess.Popen(
    [sys.executable, "-c",
     "import shmlog, sys; shmlog.init('stale'); print('ready', flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
assert owner.stdout.readline().strip() == "ready"
owner.kill()
owner.wait()
foreign = "/dev/shm/shmlog-65534-other@ctl"
with open(foreign, "wb") as f:
    f.write(b"another user's session")
print("BEFORE", sorted(os.listdir("/dev/shm")))
print("CLEAN", shmlog_cli("clean", "--all"))
print("AFTER", sorted(os.listdir("/dev/shm")))
live.close()
print("CLOSED", sorted(os.listdir("/dev/shm")))
print("LS", shmlog_cli("ls"))
print("AGAIN", shmlog_cli("clean", "--all"))
"""


def test_clean_all_removes_every_session_of_this_user() -> None:
    """``clean --all`` (in a private /dev/shm) removes live and stale sessions of this uid only."""
    reason = private_shm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    done = subprocess.run(
        private_shm_command("8m", sys.executable, "-c", CLEAN_ALL_SCRIPT),
        capture_output=True, text=True, timeout=TIMEOUT, env=child_env(), check=False,
    )
    assert done.returncode == 0, done.stderr
    out = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    uid = os.getuid()
    before = literal_eval(out["BEFORE"])  # a printed list of file names
    assert f"shmlog-{uid}-live@ctl" in before and f"shmlog-{uid}-stale@ctl" in before
    assert sorted(out["CLEAN"].split("|")) == ["removed live", "removed stale"]
    assert literal_eval(out["AFTER"]) == ["shmlog-65534-other@ctl"]
    assert literal_eval(out["CLOSED"]) == ["shmlog-65534-other@ctl"]  # closing recreates nothing
    assert out["LS"] == "no shmlog sessions"
    assert out["AGAIN"] == "no sessions"

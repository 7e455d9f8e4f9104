"""``shmlog top``, ``shmlog tail`` and ``shmlog plot``.

``top`` runs against sessions this test populates from two processes (the
test and a forked child), as a subprocess the way a user runs it from another
terminal; its curses and ANSI modes are driven through a pseudo-terminal.
The checks that matter most: it shows what the hubs hold, and it attaches
without changing the session in any byte.  ``tail`` is checked against a file
that grows, is truncated and is replaced while it runs; waits synchronise on
its output, never on sleeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _shared_workers import forked_writer, wait_child

import shmlog
from shmlog import LogProcessor, MessageHub
from shmlog.errors import SessionError
from shmlog.format.presence import exit_pending
from shmlog.shm.session import destroy
from shmlog.tools import cli, plot, screen, tail, top, watch
from shmlog.tools.sessions import SessionInfo
from shmlog.wire import PROGRESS_KEY

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30.0
HUB = "task"


@pytest.fixture
def name() -> str:
    return f"view-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "SHMLOG_WORKER_ID", "SHMLOG_SESSION", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)


def child_env(**extra: str) -> dict[str, str]:
    """The environment without shmlog/torchrun variables: a terminal of its own."""
    drop = ("SHMLOG_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def default_sigint() -> None:
    """Let Ctrl-C interrupt a child, as in a terminal's foreground job.

    A test run started in the background by a non-interactive shell inherits
    SIGINT ignored, and so would every child: then Ctrl-C could not be tested.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ``python -m shmlog`` with Python's own Ctrl-C handling, whatever this process ignores.
SHMLOG_WITH_CTRL_C = [
    sys.executable, "-c",
    ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
     "from shmlog.tools.cli import main; sys.exit(main(sys.argv[1:]))"),
]


def shmlog_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shmlog", *args]


def run_shmlog(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(shmlog_cmd(*args), capture_output=True, text=True,
                          env=child_env(), timeout=TIMEOUT, check=False)


def session_files(name: str) -> dict[str, bytes]:
    """Every byte of the session's segments, by segment name."""
    start = f"shmlog-{os.getuid()}-{name}@"
    return {e: Path("/dev/shm", e).read_bytes() for e in os.listdir("/dev/shm")
            if e.startswith(start)}


def ls_row(name: str) -> dict[str, str]:
    done = run_shmlog("ls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0].split()
    for line in lines[1:]:
        cells = line.split()
        if cells and cells[0] == name:
            return dict(zip(header, cells))
    raise AssertionError(f"{name} not in shmlog ls:\n{done.stdout}")


def populate(hub_name: str = HUB) -> MessageHub:
    hub = MessageHub.get_instance(hub_name)
    for i in range(1, 21):
        hub.update_scalar("train/loss", 1.0 / i)
        hub.update_scalar("train/lr", 1e-4)
        hub.update_scalar("train/data_time", 0.25)
    hub.update_info("iter", 120)
    hub.update_info("max_iters", 1000)
    hub.update_info("epoch", 2)
    hub.update_info("max_epochs", 10)
    hub.update_info("eta", 3723.9)
    return hub


def key_row(frame: str, key: str) -> list[str]:
    for line in frame.splitlines():
        cells = line.split()
        if cells and cells[0] == key:
            return cells
    raise AssertionError(f"no row for {key!r} in\n{frame}")


def writer_rows(frame: str, key: str) -> dict[str, list[str]]:
    """The indented rows under ``key``'s row, by writer label."""
    rows: dict[str, list[str]] = {}
    lines = frame.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [key])
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


# -- top ------------------------------------------------------------------------------


def test_top_once_shows_keys_writers_and_progress_and_changes_nothing(name: str) -> None:
    # No log writer: its process and thread would write into the session meanwhile.
    with shmlog.init(name, log_writer="none") as session:
        hub = populate()
        with forked_writer([0.5, 1.5, 2.5]):
            before_files = session_files(name)
            before_ls = ls_row(name)
            control = session.shared.control
            before_tables = (control.members(), control.slots())

            done = run_shmlog("top", name, "--once", "--window", "10")

            assert done.returncode == 0, done.stderr
            assert session_files(name) == before_files  # not one byte written
            assert (control.members(), control.slots()) == before_tables
            after_ls = ls_row(name)
            assert (after_ls["MEMBERS"], after_ls["WRITERS"]) == (
                before_ls["MEMBERS"], before_ls["WRITERS"]) == ("1", "2")

            frame = done.stdout
            assert "\f" not in frame
            assert f"session {name}" in frame
            assert "iter 120/1000  epoch 3/10  eta 1:02:03" in frame
            assert "HUB" not in frame  # one hub: no hub column
            loss = key_row(frame, "train/loss")
            assert loss[1] == top.format_value(0.05)
            assert loss[2] == top.format_value(float(hub.get_scalar("train/loss").mean(10)))
            assert loss[4] == "20"
            data_time = key_row(frame, "train/data_time")
            assert data_time[1] == "2.5"  # the child wrote last
            assert data_time[2] == top.format_value(
                float(hub.get_scalar("train/data_time").mean(10)))
            assert data_time[4] == "23"
            writers = writer_rows(frame, "train/data_time")
            assert set(writers) == {"main", "worker7"}
            assert writers["main"][:2] == ["0.25", "0.25"]
            assert writers["worker7"][0] == "2.5"
            assert writers["worker7"][1] == top.format_value(4.5 / 3)
            assert writers["worker7"][3] == "3"
            assert set(writer_rows(frame, "train/loss")) == {"main"}

            hidden = run_shmlog("top", name, "--once", "--no-writers")
            assert hidden.returncode == 0, hidden.stderr
            assert "worker7" not in hidden.stdout and "train/loss" in hidden.stdout


def test_top_frames_measure_rates_between_refreshes(name: str) -> None:
    with shmlog.init(name, log_writer="none") as session:
        populate()
        with forked_writer([0.5], keep_writing=True):
            done = run_shmlog("top", name, "--frames", "3", "--interval", "0.3")
            writers = session.shared.control.slots()
        assert done.returncode == 0, done.stderr
        frames = done.stdout.split(top.FRAME_SEPARATOR)
        assert len(frames) == 3
        counts = []
        for index, frame in enumerate(frames):
            assert frame.startswith(f"shmlog top  session {name}")
            assert "eta 1:02:03" in frame
            child = writer_rows(frame, "train/data_time")["worker7"]
            counts.append(int(child[3]))
            if index:  # measured between refreshes: no train/loss update since
                assert writer_rows(frame, "train/loss")["main"][2] == "0.0"
        assert counts[0] < counts[1] < counts[2]
        rate = float(writer_rows(frames[-1], "train/data_time")["worker7"][2])
        assert 10 < rate < 1000  # one update every 5 ms, give or take a loaded machine
        assert len(writers) == 2  # the child and this process; top claimed none


def test_top_matches_history_buffer_over_merged_writers(name: str) -> None:
    with shmlog.init(name, log_writer="none"):
        hub = populate()
        with forked_writer([3.0, 4.0, 5.0, 6.0]):
            hub.update_scalar("train/data_time", 7.0)
            buffer = hub.get_scalar("train/data_time")
            for window in (1, 3, 10, 1000):
                with top.Watcher.open(name, window) as watcher:
                    stat = next(k for k in watcher.sample().keys if k.key == "train/data_time")
                assert stat.hub == HUB
                assert stat.updates == buffer.totals().updates == 25
                assert stat.current == float(buffer.current()) == 7.0
                assert stat.mean == pytest.approx(float(buffer.mean(window)))
                per_writer = {w.label: w for w in stat.writers}
                assert per_writer["worker7"].mean == pytest.approx(
                    float(buffer.per_writer()["worker7"].mean(window)))


def test_top_shows_hub_names_when_there_are_several(name: str) -> None:
    with shmlog.init(name):
        populate("train_hub")
        val = MessageHub.get_instance("val_hub")
        val.update_scalar("val/acc", 0.75)
        val.update_info("epoch", 3)
        out, err = io.StringIO(), io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        frame = out.getvalue()
        header = next(line for line in frame.splitlines() if line.startswith("HUB"))
        assert header.split()[:3] == ["HUB", "KEY", "CURRENT"]
        assert "[train_hub] iter 120/1000  epoch 3/10  eta 1:02:03" in frame
        assert "[val_hub] epoch 4" in frame  # runner.epoch 3: the 4th epoch
        assert key_row(frame, "val_hub")[1:3] == ["val/acc", "0.75"]


def test_top_reads_report_progress_and_computes_the_eta(name: str) -> None:
    with shmlog.init(name):
        hub = MessageHub.get_instance("mmengine")  # the hub report_progress uses
        for seconds in [1.0] * 10 + [0.5] * 10:
            hub.update_scalar("train/time", seconds)
        shmlog.report_progress("train", 9, iter=119, epoch=2, max_iters=1000, max_epochs=10)
        out, err = io.StringIO(), io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        # eta by MMEngine's rule: the average time since the start (0.75 s, not the
        # last 10 updates' 0.5 s) x the 880 iterations left
        assert "iter 119/1000  epoch 3/10  eta 0:11:00" in out.getvalue()
        hub.update_info("iter", 200)  # the hub's own value is newer than the report
        hub.update_info("eta", 59.9)
        out = io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        assert "iter 200/1000  epoch 3/10  eta 0:00:59" in out.getvalue()


def test_top_shows_the_epoch_the_log_line_shows(name: str) -> None:
    """runner.epoch 7 of 12: the train line says [8], so does top; a val line after it, too."""
    processor = LogProcessor()
    with shmlog.init(name):
        hub = MessageHub.get_instance("mmengine")
        hub.update_scalar("train/loss", 0.5)
        hub.update_scalar("val/acc", 0.5)
        shmlog.report_progress("train", 9, iter=99, epoch=7, dataloader_len=10, max_epochs=12)
        _tag, line = processor.format_iter(hub, "train", 9, iter=99, epoch=7,
                                           dataloader_len=10, max_epochs=12)
        assert line.startswith("Epoch(train)  [8][10/10]"), line
        out, err = io.StringIO(), io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        assert "epoch 8/12" in out.getvalue()

        # Validation after that epoch: runner.epoch has moved on to 8.
        shmlog.report_progress("val", 4, iter=100, epoch=8, dataloader_len=5, max_epochs=12,
                               event="epoch_end")
        _tag, line = processor.format_epoch(hub, "val", 4, iter=100, epoch=8, dataloader_len=5,
                                            max_epochs=12)
        assert line.startswith("Epoch(val) [8][5/5]"), line
        out = io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        assert "epoch 8/12" in out.getvalue()

        # MMEngine's RuntimeInfoHook: the epoch info, runner.epoch at each training epoch.
        hub.update_info("epoch", 11)
        out = io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
        assert "epoch 12/12" in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_top_title_fits_the_terminal_keeping_the_end_of_a_long_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A torchrun-long name: the title fits the terminal's width, the name's end and figures kept."""
    long = f"torchrun-{uuid.uuid4().hex}-attempt0-{uuid.uuid4().hex[:8]}"[:64]
    with shmlog.init(long):
        populate()
        for columns in (80, 60, 200):
            monkeypatch.setenv("COLUMNS", str(columns))
            out, err = _Terminal(), io.StringIO()
            assert top.run(long, once=True, out=out, err=err) == 0, err.getvalue()
            title = out.getvalue().splitlines()[0]
            assert len(title) <= columns - 1, (columns, title)
            assert re.search(r"members 1  writers \d+  keys 3  \d\d:\d\d:\d\d$", title), title
            if columns == 200:
                assert title.startswith(f"shmlog top  session {long}  members 1"), title
                continue
            shown = title.split("  members")[0]
            if columns == 80:
                assert shown.startswith("shmlog top  session ..."), title
                shown = shown.removeprefix("shmlog top  session ")
            else:  # 60: no room for the prefixes
                assert shown.startswith("..."), title
            assert long.endswith(shown[3:]) and len(shown) >= 8, (shown, long)
        # A pipe gets the whole line, whatever the terminal.
        out = io.StringIO()
        assert top.run(long, once=True, out=out, err=err) == 0, err.getvalue()
        assert out.getvalue().startswith(f"shmlog top  session {long}  members 1")


def test_title_line_shortens_only_the_name_then_drops_the_prefix() -> None:
    rest = "members 2  writers 10  keys 36  12:00:00"
    name = "a" * 20 + "-tail-1234"
    assert screen.title_line(name, rest) == f"shmlog top  session {name}  {rest}"
    full = len(f"shmlog top  session {name}  {rest}")
    assert screen.title_line(name, rest, full) == f"shmlog top  session {name}  {rest}"
    line = screen.title_line(name, rest, full - 5)
    assert line == f"shmlog top  session ...{name[8:]}  {rest}" and len(line) == full - 5
    # No room for 12 characters of the name with the prefix: the prefix goes first.
    narrow = len(f"session {name}  {rest}") - 10
    line = screen.title_line(name, rest, narrow)
    assert line == f"session ...{name[13:]}  {rest}" and len(line) == narrow
    # Then the name alone, down to 8 characters.
    line = screen.title_line(name, rest, len(rest) + 10)
    assert line == f"...{name[-5:]}  {rest}"
    # Too narrow for the figures: cut at the width, never wider.
    assert screen.title_line(name, rest, 30) == f"...{name[-5:]}  {rest}"[:30]


def test_exit_pending_waits_for_the_label_to_stay_without_a_live_writer() -> None:
    """The rule with an injected clock: a label re-taken in time never shows as exited."""
    seconds = 1_000_000_000
    grace = 5 * seconds
    last: dict[str, int] = {}
    w = "rank0/worker1"
    assert exit_pending([(w, w, True)], last, 0, grace) == frozenset()
    # The epoch ended: the worker exited, its successor has not started yet.
    assert exit_pending([(w, w, False)], last, 2 * seconds, grace) == {w}
    # The successor took another slot under the same label: the old row stays unmarked.
    both = [(w, w, False), (w, f"{w}#9", True)]
    assert exit_pending(both, last, 30 * seconds, grace) == {w}
    # It exits too, and no writer of the label comes back within the grace: exited.
    gone = [(w, w, False), (w, f"{w}#9", False)]
    assert exit_pending(gone, last, 34 * seconds, grace) == {w, f"{w}#9"}
    assert exit_pending(gone, last, 35 * seconds, grace) == frozenset()
    # A label this reader never saw alive is exited at once; a zero grace marks at once.
    assert exit_pending([("rank1", "rank1", False)], last, 35 * seconds, grace) == frozenset()
    assert exit_pending([(w, w, True)], {}, 0, 0) == frozenset()
    assert exit_pending([(w, w, False)], {w: 0}, 0, 0) == frozenset()


def test_top_does_not_mark_a_worker_exited_within_the_grace(name: str) -> None:
    """A worker that exits between two refreshes is not '(exited)' until the grace is over."""
    with shmlog.init(name, log_writer="none"):
        populate()
        patient = watch.Watcher.open(name, exit_grace=3600.0)
        prompt = watch.Watcher.open(name, exit_grace=0.0)
        try:
            with forked_writer([0.5, 1.5]):
                for watcher in (patient, prompt):
                    frame = "\n".join(screen.render(watcher.sample()).lines)
                    assert "worker7" in frame and "(exited)" not in frame, frame
            # The worker exited (an epoch's end); within the grace it is not marked.
            frame = "\n".join(screen.render(patient.sample()).lines)
            assert "worker7" in frame and "(exited)" not in frame, frame
            assert " exited)" not in frame.splitlines()[0]
            frame = "\n".join(screen.render(prompt.sample()).lines)
            assert "worker7 (exited)" in frame, frame
            assert "(+1 exited)" in frame.splitlines()[0]
        finally:
            patient.close()
            prompt.close()
        with pytest.raises(ValueError, match="exit_grace: expected seconds >= 0, got -1"):
            watch.Watcher.open(name, exit_grace=-1)


def test_top_defaults_to_the_only_live_session(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def info(session: str, status: str) -> SessionInfo:
        return SessionInfo(session, 1, status, 1, 1, 1, 1, 1)

    listed: list[SessionInfo] = []
    monkeypatch.setattr(watch, "list_sessions", lambda: listed)
    with pytest.raises(SessionError, match="no live shmlog session"):
        top.choose_session(None)
    listed[:] = [info("old", "stale"), info(name, "alive")]
    assert top.choose_session(None) == name
    listed.append(info("other", "alive"))
    with pytest.raises(SessionError, match=rf"2 live shmlog sessions: {name}, other"):
        top.choose_session(None)

    listed.pop()
    with shmlog.init(name):
        populate()
        out, err = io.StringIO(), io.StringIO()
        assert top.run(None, once=True, out=out, err=err) == 0, err.getvalue()
        assert f"session {name}" in out.getvalue()
        listed.clear()
        err = io.StringIO()
        assert top.run(None, once=True, out=io.StringIO(), err=err) == 1
        assert "no live shmlog session" in err.getvalue()


def test_top_on_a_missing_or_closed_session_fails_clearly(name: str) -> None:
    done = run_shmlog("top", name, "--once")
    assert done.returncode == 1
    assert f"no shmlog session named {name!r}" in done.stderr
    assert "Traceback" not in done.stderr
    with shmlog.init(name) as session:
        populate()
        session.close()
        done = run_shmlog("top", name, "--frames", "2")
    assert done.returncode == 1
    assert f"no shmlog session named {name!r}" in done.stderr
    done = run_shmlog("top", "bad/name", "--once")
    assert done.returncode == 1 and "session name 'bad/name'" in done.stderr


def test_top_exits_when_the_session_closes(name: str) -> None:
    with shmlog.init(name) as session:
        populate()
        proc = subprocess.Popen(  # output to a pipe: plain frames until the session ends
            shmlog_cmd("top", name, "--interval", "0.05"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
        )
        try:
            assert proc.stdout.readline().startswith(f"shmlog top  session {name}")
            session.close()
            err = proc.communicate(timeout=TIMEOUT)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert f"shmlog top: shmlog session {name!r} was closed" in err
    assert "Traceback" not in err


def test_top_refuses_a_stale_session(name: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            shmlog.init(name, log_writer="none")
            MessageHub.get_instance(HUB).update_scalar("train/loss", 1.0)
        finally:
            os._exit(0)  # no clean-up: the session is left stale
    assert wait_child(pid) == 0
    try:
        done = run_shmlog("top", name, "--once")
        assert done.returncode == 1
        assert f"shmlog session {name!r} is stale" in done.stderr
    finally:
        assert destroy(name)


def run_in_pty(
    args: list[str], expect: bytes, action: Callable[[int], None]
) -> tuple[int, bytes]:
    """Run ``shmlog args`` on a 40x160 pseudo-terminal; call ``action(fd)`` once ``expect`` shows.

    Returns the exit status and everything the program wrote to the terminal.
    """
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
            default_sigint()
            os.execve(sys.executable, shmlog_cmd(*args), child_env(TERM="xterm"))
        finally:
            os._exit(127)
    output = b""
    acted = False
    status = None
    deadline = time.monotonic() + TIMEOUT
    try:
        while status is None and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                output += chunk
                if not chunk:
                    status = wait_child(pid, max(0.1, deadline - time.monotonic()))
                    break
            if not acted and expect in output:
                action(fd)
                acted = True
            if acted:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(raw)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert acted, f"never saw {expect!r}; output: {output[-2000:]!r}"
    assert status is not None, f"did not exit; output: {output[-2000:]!r}"
    return status, output


def left_the_screen_cleanly(mode: str, output: bytes) -> bool:
    """Whether the terminal was given back: alternate screen left, cursor shown."""
    if mode == "curses":
        return (b"\x1b[?1049h" in output
                and output.rfind(b"\x1b[?1049l") > output.find(b"train/loss"))
    return output.rfind(b"\x1b[?25h") > output.rfind(b"\x1b[K")  # after the last frame


@pytest.mark.parametrize(
    ("mode", "key"),
    [("curses", b"q"), ("curses", b"\x03"), ("ansi", b"q")],
    ids=["curses-q", "curses-ctrl-c", "ansi-q"],
)
def test_top_on_a_terminal_quits_on_q_and_ctrl_c(name: str, mode: str, key: bytes) -> None:
    with shmlog.init(name):  # with the default log writer (a sidecar process)
        populate()
        extra = ["--ansi"] if mode == "ansi" else []
        status, output = run_in_pty(["top", name, "--interval", "0.2", *extra],
                                    b"train/loss", lambda fd: os.write(fd, key))
    assert status == 0, output[-2000:]
    assert b"Traceback" not in output
    assert b"worker" not in output and b"main" in output
    assert left_the_screen_cleanly(mode, output), output[-500:]
    if mode == "ansi":  # redrawn in place, never cleared as a whole after the start
        assert output.count(b"\x1b[2J") == 1 and b"\x1b[H" in output and b"\x1b[K" in output


@pytest.mark.parametrize("mode", ["curses", "ansi"])
def test_top_on_a_terminal_exits_when_the_session_closes(name: str, mode: str) -> None:
    with shmlog.init(name) as session:
        populate()
        extra = ["--ansi"] if mode == "ansi" else []
        status, output = run_in_pty(["top", name, "--interval", "0.05", *extra],
                                    b"train/loss", lambda fd: session.close())
    assert status == 0, output[-2000:]
    assert left_the_screen_cleanly(mode, output), output[-500:]
    assert f"shmlog top: shmlog session {name!r} was closed".encode() in output


# -- tail ----------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def test_tail_no_follow_prints_the_last_lines(tmp_path: Path, capfdbinary) -> None:
    log = tmp_path / "run.log"
    write_lines(log, [f"line {i}" for i in range(1, 21)])
    assert cli.main(["tail", str(log), "--no-follow", "-n", "5"]) == 0
    assert capfdbinary.readouterr().out == b"".join(
        f"line {i}\n".encode() for i in range(16, 21))

    log.write_bytes(b"a\nb\nno newline at the end")
    assert cli.main(["tail", str(log), "--no-follow", "-n", "2"]) == 0
    assert capfdbinary.readouterr().out == b"b\nno newline at the end"
    assert cli.main(["tail", str(log), "--no-follow", "-n", "50"]) == 0
    assert capfdbinary.readouterr().out == log.read_bytes()
    assert cli.main(["tail", str(log), "--no-follow", "-n", "0"]) == 0
    assert capfdbinary.readouterr().out == b""

    long_lines = [f"{i:06d} " + "x" * 5000 for i in range(100)]  # longer than a read block
    write_lines(log, long_lines)
    assert cli.main(["tail", str(log), "--no-follow", "-n", "30"]) == 0
    assert capfdbinary.readouterr().out.decode().splitlines() == long_lines[-30:]


def test_tail_finds_the_master_log_of_a_run_dir(tmp_path: Path, capfdbinary) -> None:
    old = tmp_path / "old.log"
    write_lines(old, ["old run"])
    master = tmp_path / "20240101_000000" / "20240101_000000.log"
    master.parent.mkdir()
    write_lines(master, ["rank 0 line"])
    rank = master.with_name("20240101_000000_rank1.log")
    write_lines(rank, ["rank 1 line"])
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(master, (now - 10, now - 10))
    assert tail.find_master_log(tmp_path) == master
    assert cli.main(["tail", str(tmp_path), "--no-follow"]) == 0
    assert capfdbinary.readouterr().out == b"rank 0 line\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["tail", str(empty), "--no-follow"]) == 1
    assert b"no log file in" in capfdbinary.readouterr().err
    assert cli.main(["tail", str(tmp_path / "missing.log"), "--no-follow"]) == 1
    assert b"no such file" in capfdbinary.readouterr().err


class Reader:
    """Reads a child's output pipe up to expected text, with a deadline."""

    def __init__(self, stream: io.BufferedReader) -> None:
        self.fd = stream.fileno()
        self.seen = b""

    def expect(self, text: bytes) -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"never saw {text!r}; got {self.seen!r}")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise AssertionError(f"output ended before {text!r}; got {self.seen!r}")
            self.seen += chunk
        found, _, self.seen = self.seen.partition(text)
        return found + text


@contextlib.contextmanager
def tailing(*args: str) -> Iterator[tuple[subprocess.Popen, Reader, Reader]]:
    proc = subprocess.Popen([*SHMLOG_WITH_CTRL_C, "tail", *args, "--interval", "0.02"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    try:
        yield proc, Reader(proc.stdout), Reader(proc.stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_tail_follows_appends_truncation_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    write_lines(log, [f"line {i}" for i in range(1, 21)])
    with tailing(str(log), "-n", "2") as (proc, out, err):
        assert out.expect(b"line 20\n") == b"line 19\nline 20\n"
        write_lines(log, ["line 21", "line 22"], "a")
        assert out.expect(b"line 22\n") == b"line 21\nline 22\n"
        with open(log, "a") as f:
            f.write("part")
            f.flush()
            assert out.expect(b"part") == b"part"
            f.write("ial\n")
        assert out.expect(b"ial\n") == b"ial\n"

        write_lines(log, ["after truncation"])  # shorter than what was read
        assert out.expect(b"after truncation\n") == b"after truncation\n"
        err.expect(b"file truncated\n")

        os.rename(log, tmp_path / "run.log.1")
        write_lines(log, ["rotated 1", "rotated 2"])
        assert out.expect(b"rotated 2\n") == b"rotated 1\nrotated 2\n"
        err.expect(b"has been replaced; following the new file\n")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        assert b"Traceback" not in proc.stderr.read()


def test_tail_on_a_run_dir_follows_each_new_run_log(tmp_path: Path) -> None:
    with tailing(str(tmp_path), "-n", "1") as (proc, out, err):
        err.expect(f"waiting for a log file in {tmp_path}\n".encode())
        first = tmp_path / "first" / "first.log"
        first.parent.mkdir()
        write_lines(first, ["first run 1", "first run 2"])
        assert out.expect(b"first run 2\n") == b"first run 1\nfirst run 2\n"  # all of it
        err.expect(f"following {first}\n".encode())

        second = tmp_path / "second" / "second.log"
        second.parent.mkdir()
        write_lines(second, ["second run"])
        assert out.expect(b"second run\n") == b"second run\n"
        err.expect(f"following {second}\n".encode())
        write_lines(first, ["late line of the first run"], "a")  # not a new log: ignored
        write_lines(second, ["second run goes on"], "a")
        assert out.expect(b"goes on\n") == b"second run goes on\n"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0


# -- plot ----------------------------------------------------------------------------


def write_scalars(path: Path, steps: int = 60) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for step in range(10, 10 * steps + 1, 10):
            record = {
                "step": step, "epoch": step // 200, "iter": step,
                "loss": 2.0 * 0.97 ** (step / 10) + 0.05, "loss_cls": 0.97 ** (step / 10),
                "lr": 0.02 * 0.5 * (1 + math.cos(math.pi * step / (10 * steps))),
                "time": 0.3 + 0.01 * (step % 30 == 0), "data_time": 0.02,
                "memory": 3000 + step // 10, "note": "text values are skipped",
            }
            f.write(json.dumps(record) + "\n")
        f.write('{"step": 610, "loss": 0.1')  # a line still being written


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


def test_plot_renders_a_png_of_grouped_curves(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    scalars = tmp_path / "run" / "vis_data" / "scalars.json"
    write_scalars(scalars)
    out = tmp_path / "figures" / "curves.png"
    assert cli.main(["plot", str(tmp_path / "run"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"
    assert "skipped 1 lines" in captured.err
    assert out.stat().st_size > 0
    width, height = png_size(out)
    assert (width, height) == (1000, 1200)  # four panels: loss, lr, time, other

    assert cli.main(["plot", str(scalars)]) == 0
    default = scalars.with_name("scalars.png")
    assert capsys.readouterr().out == f"{default}\n"
    assert png_size(default)[0] == 1000


def test_plot_groups_and_loads_metrics(tmp_path: Path) -> None:
    assert [plot.group_of(n) for n in (
        "loss", "train/loss_cls", "val_loss", "lr", "base_lr", "train/lr",
        "optim.learning_rate", "time", "data_time", "train/time", "memory",
        "accuracy/top1", "timestamp",
    )] == ["loss", "loss", "loss", "lr", "lr", "lr", "lr", "time", "time", "time",
           "other", "other", "other"]
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "loss": 1.0}\n\n{"step": 1, "loss": 2.0, "acc": true}\n'
                    '{"loss": 3.0}\n[1, 2]\n{"step": 3, "loss": NaN}\n')
    loaded = plot.load_scalars(path)
    assert loaded.skipped == 2
    steps, values = loaded.series["loss"]
    assert steps == [1, 2, 3] and values[:2] == [2.0, 1.0]
    assert set(loaded.series) == {"loss"}  # booleans are not metrics
    assert math.isnan(values[2])
    assert plot.find_scalars(tmp_path) == path

    export = tmp_path / "run" / "scalars.jsonl"  # as shmlog's log writer exports it
    export.parent.mkdir()
    export.write_text('{"step": 10, "mode": "train", "loss": 0.5, "lr": 0.1, "iter": 9}\n'
                      '{"step": 10, "mode": "val", "loss": 0.7, "accuracy": 0.9}\n'
                      '{"step": 20, "mode": "train", "loss": "nan", "lr": 0.1, "iter": 19}\n')
    loaded = plot.load_scalars(export)
    assert sorted(loaded.series) == ["loss", "lr", "val/accuracy", "val/loss"]
    assert loaded.series["val/loss"] == ([10], [0.7])
    assert loaded.series["loss"][0] == [10, 20] and math.isnan(loaded.series["loss"][1][1])
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert plot.find_scalars(tmp_path) == export  # the newest


def test_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    write_scalars(tmp_path / "scalars.json", steps=3)
    assert cli.main(["plot", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install 'shmlog[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_plot_without_scalars_fails_clearly(tmp_path: Path, capsys) -> None:
    assert cli.main(["plot", str(tmp_path)]) == 1
    assert "no scalars file in" in capsys.readouterr().err
    (tmp_path / "scalars.json").write_text('{"step": 1, "note": "x"}\n')
    assert cli.main(["plot", str(tmp_path)]) == 1
    assert "no numeric metrics" in capsys.readouterr().err


def test_ls_still_works(name: str) -> None:
    with shmlog.init(name):
        assert ls_row(name)["STATUS"] == "alive"
    assert run_shmlog("clean", "--help").returncode == 0


def test_only_local_rank_0_stores_the_progress_top_shows(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ranks of one node share the hub's runtime info: what top shows is local
    # rank 0's report (which holds the job's figures), not the last rank's.
    with shmlog.init(name):
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        shmlog.report_progress("train", 9, iter=119, max_iters=1000)
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("LOCAL_RANK", "1")
        shmlog.report_progress("train", 19, iter=129, max_iters=1000)
        stored = MessageHub.get_instance("mmengine").get_info(PROGRESS_KEY)
        out, err = io.StringIO(), io.StringIO()
        assert top.run(name, once=True, out=out, err=err) == 0, err.getvalue()
    assert stored["iter"] == 119
    assert "iter 119/1000" in out.getvalue()

"""Helpers for the multi-process tests: child targets, subprocess and /dev/shm utilities.

Child targets live here, at module top level, because spawn and forkserver
children import their target by module name; pytest puts ``tests/`` on
``sys.path`` and multiprocessing passes ``sys.path`` on to its children.
Targets never call ``shmlog.init``: they find the session through the
environment (spawn, forkserver) or inherited memory (fork).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

SHM = "/dev/shm"
TIMEOUT = 30  # seconds for any single join / wait in a test


# -- a forked writer ------------------------------------------------------------------


def wait_child(pid: int, timeout: float = TIMEOUT) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not exit within {timeout}s")


@contextlib.contextmanager
def forked_writer(values: list[float], keep_writing: bool = False, worker: int = 7,
                  hub_name: str = "task") -> Iterator[int]:
    """A forked child (label ``worker<worker>``) that logs ``values`` to ``train/data_time``
    of MessageHub ``hub_name`` and waits; yields its pid, checks it exits with status 0.

    With ``keep_writing`` it goes on logging every few milliseconds until the
    block ends; otherwise it stays idle (and alive) until then.
    """
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(stop_w)
            os.environ["SHMLOG_WORKER_ID"] = str(worker)
            from shmlog import MessageHub

            hub = MessageHub.get_instance(hub_name)
            for value in values:
                hub.update_scalar("train/data_time", value)
            os.write(ready_w, b"r")
            while not select.select([stop_r], [], [], 0.005 if keep_writing else None)[0]:
                hub.update_scalar("train/data_time", values[-1])
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(stop_r)
    try:
        assert select.select([ready_r], [], [], TIMEOUT)[0], "writer child never got ready"
        assert os.read(ready_r, 1) == b"r"
        yield pid
    finally:
        os.close(stop_w)
        os.close(ready_r)
        assert wait_child(pid) == 0



# -- names and /dev/shm -------------------------------------------------------------


def unique_name(tag: str = "t") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def entry_prefix(name: str) -> str:
    return f"shmlog-{os.getuid()}-{name}@"


def shm_entries(name: str) -> list[str]:
    """The session's entries in /dev/shm (e.g. ``['ctl', 'r0']``), sorted."""
    start = entry_prefix(name)
    return sorted(e[len(start) :] for e in os.listdir(SHM) if e.startswith(start))


def shm_bytes(name: str) -> int:
    start = entry_prefix(name)
    return sum(
        os.stat(os.path.join(SHM, e)).st_size for e in os.listdir(SHM) if e.startswith(start)
    )


# -- processes ------------------------------------------------------------------------


def join_all(processes: list, expected: int = 0) -> None:
    """Join multiprocessing children (killing any that hang) and check their exit codes."""
    for p in processes:
        p.join(TIMEOUT)
        if p.exitcode is None:
            p.kill()
            p.join(TIMEOUT)
    assert [p.exitcode for p in processes] == [expected] * len(processes)


# -- subprocesses ---------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without shmlog/torchrun variables, plus ``extra``."""
    drop = ("SHMLOG_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) or k == "SHMLOG_JOB"}
    env.update(extra)
    return env


def popen_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -c code args...`` with pipes for stdin/stdout/stderr (text mode)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env() if env is None else env,
    )


def expect_line(proc: subprocess.Popen, expected: str) -> str:
    """Read ``proc``'s next stdout line and check it starts with ``expected``."""
    line = proc.stdout.readline()
    if not line.startswith(expected):
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
        raise AssertionError(f"expected {expected!r} from child, got {line!r}; stderr:\n{err}")
    return line.strip()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m shmlog args...``; asserts it succeeds."""
    done = subprocess.run(
        [sys.executable, "-m", "shmlog", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done


LS_COLUMNS = ["NAME", "OWNER", "STATUS", "MEMBERS", "WRITERS", "KEYS", "BYTES", "AGE", "METRICS"]


def parse_ls(output: str) -> dict[str, dict[str, str]]:
    """Rows of ``shmlog ls`` by session name; columns cut at the header's offsets."""
    lines = output.splitlines()
    if not lines or lines[0].strip() == "no shmlog sessions":
        return {}
    header = lines[0]
    assert header.split() == LS_COLUMNS, header
    starts = [header.index(column) for column in LS_COLUMNS]
    rows = {}
    for line in lines[1:]:
        cells = [
            line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, start in enumerate(starts)
        ]
        rows[cells[0]] = dict(zip(LS_COLUMNS, cells))
    return rows


# -- private /dev/shm (mount namespace) ----------------------------------------------

_PRIVATE_SHM = "mount -t tmpfs -o size={size} tmpfs /dev/shm && exec \"$0\" \"$@\""


def private_shm_command(size: str, *argv: str) -> list[str]:
    """A command line running ``argv`` with a private tmpfs of ``size`` on /dev/shm."""
    return ["unshare", "-m", "sh", "-c", _PRIVATE_SHM.format(size=size), *argv]


def private_shm_unavailable() -> str | None:
    """Why a private /dev/shm cannot be mounted here, or None when it can."""
    try:
        done = subprocess.run(
            private_shm_command("1m", "true"),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare unavailable: {exc}"
    if done.returncode != 0:
        return f"cannot mount a private tmpfs on /dev/shm: {done.stderr.strip()}"
    return None


def stop_forkserver() -> None:
    """Stop this process's forkserver so the next one starts with the current environment."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


# -- child targets ---------------------------------------------------------------------


def child_values(index: int, updates: int) -> tuple[list[float], list[float]]:
    """The (values, counts) child ``index`` logs: distinct per child, counts 1..3."""
    values = [float(index * 1_000_000 + i) for i in range(updates)]
    counts = [float(1 + i % 3) for i in range(updates)]
    return values, counts


def log_sequence(hub_name: str, key: str, index: int, updates: int, barrier: Any) -> None:
    """Wait for the other children, then log ``child_values(index, updates)`` under ``key``."""
    from shmlog import MessageHub

    hub = MessageHub.get_instance(hub_name)
    barrier.wait(TIMEOUT)
    for value, count in zip(*child_values(index, updates)):
        hub.update_scalar(key, value, count)


def info_round_trip(hub_name: str, conn: Any) -> None:
    """Read the parent's runtime info, set our own, and report what we see after a pop."""
    from shmlog import MessageHub

    hub = MessageHub.get_instance(hub_name)
    conn.send(("cfg", hub.get_info("cfg")))
    hub.update_info("from_child", {"pid": os.getpid(), "array": np.arange(4.0), "t": (1, "a")})
    conn.send(("set", None))
    while True:
        request = conn.recv()
        if request == "quit":
            return
        conn.send((request, hub.get_info(request, "<missing>")))


def count_up(hub_name: str, key: str, started: Any, stop: Any) -> None:
    """Log value=i, count=1 for i = 0, 1, 2, ... until ``stop`` is set."""
    from shmlog import MessageHub

    hub = MessageHub.get_instance(hub_name)
    update = hub.update_scalar
    i = 0
    while True:
        for _ in range(256):
            update(key, i)
            i += 1
        if i == 1024:
            started.set()
        if stop.is_set():
            return


def wait_then_log(hub_name: str, started: Any, go: Any, patience: float) -> None:
    """Signal ``started``, wait up to ``patience`` s for ``go`` (exit 3 if it never comes), log."""
    from shmlog import MessageHub

    started.set()
    if not go.wait(patience):
        sys.exit(3)
    MessageHub.get_instance(hub_name).update_scalar("k", 1.0)


def log_forever(hub_name: str, key: str, value: float, count: float, ready: Any, running: Any) -> None:
    """As DataLoader worker 0: log (value, count) under ``key`` until killed."""
    from shmlog import MessageHub

    os.environ["SHMLOG_WORKER_ID"] = "0"
    hub = MessageHub.get_instance(hub_name)
    update = hub.update_scalar
    ready.set()
    for _ in range(100):
        update(key, value, count)
    running.set()
    while True:
        update(key, value, count)


def log_n(hub_name: str, key: str, value: float, count: float, n: int, worker: int | None) -> None:
    """Log ``(value, count)`` ``n`` times, as DataLoader worker ``worker`` when given."""
    from shmlog import MessageHub

    if worker is not None:
        os.environ["SHMLOG_WORKER_ID"] = str(worker)
    hub = MessageHub.get_instance(hub_name)
    for _ in range(n):
        hub.update_scalar(key, value, count)


def log_keys(hub_name: str, keys: list[str], worker: int | None) -> None:
    """Log value ``k`` (its index) for each key, as worker ``worker`` when given."""
    from shmlog import MessageHub

    if worker is not None:
        os.environ["SHMLOG_WORKER_ID"] = str(worker)
    hub = MessageHub.get_instance(hub_name)
    for k, key in enumerate(keys):
        hub.update_scalar(key, k)
        hub.update_scalar(key, k + 0.5, 3)


def rewrite_options(started: Any, stop: Any) -> None:
    """Rewrite the session's options (JSON of varying length) until ``stop`` is set."""
    import shmlog

    shared = shmlog.current_session().shared
    i = 0
    while not stop.is_set():
        shared.update_options(capacities={"k" * (1 + i % 300): 64})
        i += 1
        if i == 100:
            started.set()


def rank_view(hub_name: str, rank: int, worker: int | None, value: float, barrier: Any,
              conn: Any) -> None:
    """As rank ``rank`` (worker ``worker``): log ``value`` 3 times, wait, report what is read."""
    from shmlog import MessageHub

    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), "2"
    if worker is not None:
        os.environ["SHMLOG_WORKER_ID"] = str(worker)
    hub = MessageHub.get_instance(hub_name)
    for _ in range(3):
        hub.update_scalar("train/x", value)
    if worker is None:
        hub.update_scalar(f"train/only{rank}", float(rank))
    barrier.wait(TIMEOUT)
    buffer = hub.get_scalar("train/x")
    conn.send((float(buffer.mean()), buffer.totals().updates, sorted(hub.log_scalars),
               sorted(buffer.per_writer())))
    barrier.wait(TIMEOUT)  # the parent reads while everyone is still there

"""What a session costs a process and /dev/shm: descriptors, bytes per key, advice when full.

A session keeps one file descriptor per process whatever its keys and
writers, takes from /dev/shm about what its rings need (small capacities are
small), and when /dev/shm is full says what to change, and that change works.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from _shared_workers import (
    TIMEOUT,
    child_env,
    private_shm_command,
    private_shm_unavailable,
    shm_bytes,
    shm_entries,
)

import shmlog
from shmlog import MessageHub
from shmlog.shm.lifecycle import CONTROL_SEGMENT_BYTES
from shmlog.shm.scalar_rings import ring_bytes

pytestmark = pytest.mark.timeout(120)

DESCRIPTORS_SCRIPT = r"""
import os, resource, sys, threading
import shmlog
from shmlog import MessageHub
from shmlog.errors import DescriptorLimitError

def open_fds():
    return len(os.listdir("/proc/self/fd")) - 1

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
before = open_fds()
# Segments of one page each: thousands of them.
with shmlog.init(sys.argv[1], log_writer="none", capacity=16, segment_bytes=4096) as session:
    hub = MessageHub.get_instance("fds")
    for k in range(10_000):
        hub.update_scalar(f"key/{k}", float(k))

    together = threading.Barrier(8)  # eight writers alive at once: eight slots

    def write(t):
        for k in range(100):
            hub.update_scalar(f"key/{k}", float(t))
        together.wait(timeout=60)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("SEGMENTS", session.shared.control.read_state().ring_segments, flush=True)
    print("WRITERS", len(hub.get_scalar("key/7").per_writer()), flush=True)
    print("VALUE", hub.get_scalar("key/9999").current(), flush=True)
    print("OPEN", before, open_fds(), flush=True)

    held = []
    try:
        while True:  # the program's own descriptors use up the limit
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    try:
        for k in range(10_000, 11_000):
            hub.update_scalar(f"key/{k}", 1.0)
        print("LIMIT none", flush=True)
    except DescriptorLimitError as exc:
        print("LIMIT", exc, flush=True)
    for fd in held:
        os.close(fd)
    hub.update_scalar("after", 2.0)
    print("AFTER", hub.get_scalar("after").current(), flush=True)
"""


def test_descriptors_do_not_grow_with_keys_or_writers(name: str) -> None:
    """At RLIMIT_NOFILE 256: 10,000 keys in 2,500 segments and 8 threads hold one descriptor."""
    done = subprocess.run(
        [sys.executable, "-c", DESCRIPTORS_SCRIPT, name], capture_output=True, text=True,
        timeout=TIMEOUT * 3, env=child_env(), check=False,
    )
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        assert int(lines["SEGMENTS"]) >= 2500
        assert lines["WRITERS"] == "9" and lines["VALUE"] == "9999.0"
        before, after = map(int, lines["OPEN"].split())
        assert after - before == 1, "the control segment's descriptor (its lock) only"
        limit = lines["LIMIT"]
        assert re.fullmatch(
            r"cannot open shared memory /shmlog-\d+-[\w-]+@r\d+: this process has 256 file "
            r"descriptors open and its RLIMIT_NOFILE soft limit is 256 \(hard limit \d+\)\. "
            r"shmlog keeps one per session whatever its keys and writers, so the others are "
            r"the program's own: raise the limit \(ulimit -n, or resource\.setrlimit\("
            r"resource\.RLIMIT_NOFILE, \.\.\.\) in the program\) or close descriptors it no "
            r"longer needs", limit,
        ), limit
        assert lines["AFTER"] == "2.0"
    finally:
        assert shm_entries(name) == []


@pytest.mark.parametrize("keys", [1, 100, 1000])
def test_small_capacities_take_little_dev_shm(name: str, keys: int) -> None:
    """capacity=16: the rings' segments take at most twice N x ring_bytes(16), plus a page."""
    ring = ring_bytes(16)
    with shmlog.init(name, log_writer="none", capacity=16) as session:
        hub = MessageHub.get_instance("footprint")
        for k in range(keys):
            hub.update_scalar(f"k{k}", float(k))
        total = shm_bytes(name)
        assert total == session.shared.total_bytes()
        rings = total - CONTROL_SEGMENT_BYTES
        assert keys * ring <= rings <= 2 * keys * ring + 4096, (keys, rings)


ADVICE_SCRIPT = r"""
import os
import shmlog
from shmlog import MessageHub
from shmlog.errors import ShmFullError

def fill(tag, **options):
    logged = 0
    try:
        with shmlog.init(tag, log_writer="none", **options):
            hub = MessageHub.get_instance(tag)
            for k in range(200):
                hub.update_scalar(f"k{k}", 1.0)
                logged += 1
    except ShmFullError as exc:
        print("FULL", tag, exc, flush=True)
    print("LOGGED", tag, logged, flush=True)
    print("LEFT", tag, sorted(os.listdir("/dev/shm")), flush=True)

fill("default")
fill("advised", capacity=16)  # what the message says to change
"""


def test_shm_full_advice_works_when_followed() -> None:
    """In a 1 MiB /dev/shm the default capacity fills up; the capacity the message names fits."""
    reason = private_shm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    done = subprocess.run(
        private_shm_command("1m", sys.executable, "-c", ADVICE_SCRIPT),
        capture_output=True, text=True, timeout=TIMEOUT, env=child_env(), check=False,
    )
    assert done.returncode == 0, done.stderr
    out = {tuple(line.split(" ", 2)[:2]): line.split(" ", 2)[2] for line in done.stdout.splitlines()}
    full = out[("FULL", "default")]
    needed, available = map(int, re.search(r"needs (\d+) bytes and (\d+) bytes", full).groups())
    assert needed > available
    assert needed <= ring_bytes(4096) + 4096, "more than one ring's segment was asked for"
    assert f"({ring_bytes(4096)} at this ring's capacity of 4096, {ring_bytes(16)} at capacity=16)" in full
    assert "lower capacity= (or capacities= for some keys) in shmlog.init" in full
    assert 0 < int(out[("LOGGED", "default")]) < 200
    assert ("FULL", "advised") not in out, out
    assert out[("LOGGED", "advised")] == "200"
    assert out[("LEFT", "default")] == out[("LEFT", "advised")] == "[]"

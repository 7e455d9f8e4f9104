"""What the benchmark scripts share: running a measurement in a forked child, units.

The scripts import it as a sibling module (``scripts/`` is on ``sys.path`` when
one of them runs).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for
from typing import Any

CHILD_TIMEOUT = 300.0  # seconds a child may take before the run is declared stuck


def fork_context() -> Any:
    return mp.get_context("fork")


def run_reporting_child(target: Callable[..., Any], *args: Any) -> Any:
    """Run ``target(*args)`` in a forked child and return what it returns.

    A child that raises, dies or hangs makes this raise, with its traceback.
    """
    ctx = fork_context()
    reader, writer = ctx.Pipe(duplex=False)

    def main() -> None:
        try:
            writer.send(("ok", target(*args)))
        except BaseException:
            writer.send(("error", traceback.format_exc()))
            raise

    child = ctx.Process(target=main, name=f"bench-{target.__name__}")
    child.start()
    writer.close()
    try:
        ready = wait_for([reader, child.sentinel], timeout=CHILD_TIMEOUT)
        if reader not in ready:
            raise RuntimeError(f"child {target.__name__} died or hung (exit code {child.exitcode})")
        status, payload = reader.recv()
    finally:
        child.join(CHILD_TIMEOUT)
        reader.close()
    if status != "ok":
        raise RuntimeError(f"child {target.__name__} failed:\n{payload}")
    return payload


def wait_events(events: list[Any], children: list[Any], what: str) -> None:
    """Wait for every event; fail (rather than hang) when a child has died."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    for event in events:
        while not event.wait(1.0):
            dead = [c for c in children if c.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                codes = [c.exitcode for c in children]
                raise RuntimeError(f"waiting for {what}: children exit codes {codes}")


def join_children(children: list[Any], check: bool = True) -> None:
    """Join every child (terminating one that outlives the timeout); with ``check``,
    raise if one failed."""
    for child in children:
        child.join(CHILD_TIMEOUT)
        if child.is_alive():
            child.terminate()
            child.join()
    codes = [c.exitcode for c in children]
    if check and any(codes):
        raise RuntimeError(f"a child failed: exit codes {codes}")


def format_ns(ns: float) -> str:
    """``ns`` nanoseconds in the unit that reads best (ns, us, ms)."""
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def shm_entries(directory: str = "/dev/shm") -> set[str]:
    """What /dev/shm holds now, to check a run left it as it found it."""
    try:
        return set(os.listdir(directory))
    except OSError:
        return set()


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        with open("/proc/loadavg") as source:
            return " ".join(source.read().split()[:3])
    except OSError:
        return "unknown"

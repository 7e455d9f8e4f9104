"""Section (d) of bench_logging.py: from ``report_progress`` to the iteration line in its file.

The training loop reports a step; the session's log writer (the sidecar)
formats the step's line and writes it to the master log file.  This times
that, for every step of a short run, with the TensorBoard export off and on
(when tensorboardX is installed), on the machine as it is and with a busy
loop on every CPU.  The first line of a run is shown apart: it is the one
that opening the exports (importing tensorboardX) could hold up.  The
reference, measured next to it under the same load: a record through
CPython's QueueHandler and a QueueListener thread into a FileHandler.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import statistics
import sys
import time
from typing import Any

from benchkit import fork_context

LINE_MARK = "(train)"


def _burn(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(10_000):
            pass


class Load:
    """A busy loop on every CPU while the block runs (nothing when ``on`` is False)."""

    def __init__(self, on: bool) -> None:
        self._on = on
        self._procs: list[Any] = []

    def __enter__(self) -> Load:  # noqa: PYI034 (typing.Self needs 3.11)
        if self._on:
            ctx = fork_context()
            self._stop = ctx.Event()
            self._procs = [ctx.Process(target=_burn, args=(self._stop,), daemon=True)
                           for _ in range(os.cpu_count() or 1)]
            for proc in self._procs:
                proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._procs:
            self._stop.set()
            for proc in self._procs:
                proc.join(30)


def _lines_in(path: str) -> int:
    try:
        with open(path) as f:
            return sum(LINE_MARK in line for line in f)
    except FileNotFoundError:
        return 0


def _wait_for_lines(path: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _lines_in(path) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path}: line {count} never arrived")
        time.sleep(0.0005)


def line_latency(workdir: str, tag: str, steps: int, tensorboard: bool,
                 sessions: list[str]) -> list[float]:
    """ms from each ``report_progress`` to its line in the log file, for ``steps`` steps."""
    import shmlog
    from shmlog import MessageHub

    log_file = os.path.join(workdir, f"d-{tag}.log")
    path = os.path.join(workdir, f"d-{tag}", f"d-{tag}.log")
    hub_name = f"bench-d-{tag}"
    times = []
    with shmlog.init(f"bench-logging-d-{tag}-{os.getpid()}", log_file=log_file,
                     log_processor=dict(window_size=1, by_epoch=False), log_interval=1,
                     hub=hub_name, tensorboard=tensorboard) as session:
        sessions.append(session.name)
        hub = MessageHub.get_instance(hub_name)
        for step in range(steps):
            time.sleep(0.05)  # the writer goes back to sleep between steps, as in training
            hub.update_scalar("train/loss", 1.0 / (step + 1))
            t0 = time.perf_counter()
            shmlog.report_progress("train", step, iter=step, max_iters=steps, hub=hub_name)
            _wait_for_lines(path, step + 1)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def queue_latency(workdir: str, tag: str, steps: int) -> list[float]:
    """The reference: ms from ``logger.info`` to the line through a QueueListener thread."""
    queue = fork_context().Queue()
    path = os.path.join(workdir, f"d-queue-{tag}.log")
    handler = logging.FileHandler(path)
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    logger = logging.getLogger(f"bench-d-queue-{tag}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.handlers.QueueHandler(queue))
    times = []
    try:
        for step in range(steps):
            time.sleep(0.05)
            t0 = time.perf_counter()
            logger.info("Iter(train) [%d/%d]", step + 1, steps)
            _wait_for_lines(path, step + 1)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        listener.stop()
        handler.close()
        queue.close()
        queue.join_thread()
    return times


def section_d(sizes: dict[str, Any], workdir: str, sessions: list[str]) -> dict[str, Any]:
    from shmlog.writer.exports import tensorboard_installed

    steps = sizes["line_steps"]
    variants = [False] + ([True] if tensorboard_installed() else [])
    result: dict[str, Any] = {"steps": steps, "tensorboard_installed": len(variants) == 2}
    # The writer also echoes each iteration line to the console: not into this report.
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        _measure(result, variants, steps, workdir, sessions)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return result


def _measure(result: dict[str, Any], variants: list[bool], steps: int, workdir: str,
             sessions: list[str]) -> None:
    for loaded in (False, True):
        load = "loaded" if loaded else "idle"
        with Load(loaded):
            result[f"queue_{load}"] = queue_latency(workdir, load, steps)
            for tb in variants:
                tag = f"{load}-{'tb' if tb else 'notb'}"
                result[tag] = line_latency(workdir, tag, steps, tb, sessions)


def print_d(d: dict[str, Any]) -> None:
    print(f"(d) report_progress -> the iteration line in the log file ({d['steps']} steps a run; "
          f"loaded: a busy loop on each of {os.cpu_count()} CPUs)")
    for load in ("idle", "loaded"):
        reference = statistics.median(d[f"queue_{load}"])
        print(f"  {load}: reference QueueHandler -> QueueListener -> file: median "
              f"{reference:.2f} ms")
        for tb in ("notb", "tb"):
            times = d.get(f"{load}-{tb}")
            if times is None:
                print("    with TensorBoard: not measured (tensorboardX is not installed)")
                continue
            rest = sorted(times[1:]) or times
            median = statistics.median(rest)
            print(f"    {'with' if tb == 'tb' else 'without'} TensorBoard: first line "
                  f"{times[0]:.1f} ms, then median {median:.2f} ms, max {rest[-1]:.1f} ms "
                  f"({median / reference:.1f}x the reference)")

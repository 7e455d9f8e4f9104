"""What routing MMLogger's file output through the session's log writer costs.

Inside a session a training process never writes a log file: ``logger.info``
puts the record into the process's record ring and one writer process (the
sidecar) writes every process's files.  This script measures that path next
to the two things users do without shmlog, in the same run (no reference
number is hard-coded):

(a) Records/s from 8 processes, each making N ``logger.info`` calls, counted
    from the start signal until every record is in a file:

    * shmlog: 8 forked children (as DataLoader workers 0..7) log through one
      session; the clock stops when ``session.flush()`` returns in the owner,
      which means the writer has written (and flushed) every record.  The
      writer's CPU share over the run is read from ``/proc/<writer>/stat``
      (utime + stime before and after, divided by the wall time).
    * a FileHandler per process: each child writes its own file.
    * CPython's QueueHandler over a ``multiprocessing.Queue``: 8 producer
      processes, one QueueListener in the owner writing a FileHandler; the
      clock stops when the listener has handled every record.

    Every variant uses MMEngine's file format, and every file is counted
    afterwards: "complete" means exactly 8 x N lines, each child's in order.

(b) The cost of one ``logger.info`` call in a training process (a forked
    child): the median over many individually timed calls, for shmlog (with
    the writer draining in the background, the ring never full), a bare
    ``logging.Logger`` whose only handler formats the record and writes
    nothing, a plain FileHandler and a QueueHandler.  Each round is one
    child in which the variants take turns, a batch of calls each: a
    forked child runs at one of this machine's speeds for its whole life,
    so only variants measured in the same process compare.

(c) An idle session: the CPU the log writer and a member process (its
    standby thread) use while nothing is logged, next to this process before
    any session; and how long a record logged into the idle session takes to
    reach its file, next to a QueueListener thread writing a FileHandler.

(d) The time from ``report_progress`` to the iteration line in the log
    file, idle and under load, with and without the TensorBoard export
    (``bench_line_latency.py``).

Usage::

    python scripts/bench_logging.py            # the full run (about a minute on 2 cores)
    python scripts/bench_logging.py --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import logging.handlers
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_line_latency import print_d, section_d
from benchkit import (
    CHILD_TIMEOUT,
    fork_context,
    format_ns,
    join_children,
    load_average,
    run_reporting_child,
    shm_entries,
    wait_events,
)

SHM_DIR = "/dev/shm"

FULL = {"processes": 8, "records": 20_000, "repeats": 3, "calls": 20_000, "batch": 500,
        "idle_seconds": 5.0, "pings": 40, "line_steps": 20}
QUICK = {"processes": 8, "records": 500, "repeats": 1, "calls": 2_000, "batch": 500,
         "idle_seconds": 0.5, "pings": 5, "line_steps": 3}

MESSAGE = "Epoch(train) [%d][%d/%d]  lr: %.4e  loss: %.4f  data_time: %.4f"
SESSIONS: list[str] = []  # names of the sessions this run created, for the /dev/shm check


def _log_calls(info: Callable[..., Any], first: int, count: int) -> None:
    for i in range(first, first + count):
        info(MESSAGE, 1, i, 100_000, 0.01, 0.5 + (i % 7) * 0.01, 0.002)


def _body(i: int) -> str:
    return MESSAGE % (1, i, 100_000, 0.01, 0.5 + (i % 7) * 0.01, 0.002)


# -- loggers for each variant ----------------------------------------------------------------


def _file_handler(path: str) -> logging.Handler:
    """A FileHandler writing MMEngine's file format (the same one the writer uses)."""
    from shmlog.format.formatter import FILE_DATEFMT, MMFormatter

    handler = logging.FileHandler(path, "w", encoding="utf-8")
    handler.setFormatter(MMFormatter(color=False, datefmt=FILE_DATEFMT))
    return handler


def _plain_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A logger that does not propagate (as MMLogger does not), with one handler."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)  # as MMLogger's default
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def _shmlog_logger(name: str, log_file: str) -> logging.Logger:
    """An MMLogger whose file output goes to the session; its terminal shows errors only."""
    from shmlog import MMLogger
    from shmlog.format.formatter import TerminalHandler

    logger = MMLogger.get_instance(name, log_file=log_file)
    for handler in logger.handlers:
        if isinstance(handler, TerminalHandler):
            handler.setLevel(logging.ERROR)  # as on ranks other than 0: no terminal I/O
    return logger


# -- child processes ----------------------------------------------------------------------------


def _shmlog_producer(worker: int, log_file: str, records: int, ready: Any, start: Any) -> None:
    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    logger = _shmlog_logger(f"bench-{worker}", log_file)
    ready.set()
    start.wait()
    _log_calls(logger.info, 0, records)


def _file_producer(path: str, records: int, ready: Any, start: Any) -> None:
    logger = _plain_logger(f"bench-file-{os.getpid()}", _file_handler(path))
    ready.set()
    start.wait()
    _log_calls(logger.info, 0, records)
    for handler in logger.handlers:
        handler.close()


def _queue_producer(queue: Any, records: int, ready: Any, start: Any) -> None:
    logger = _plain_logger(f"bench-queue-{os.getpid()}", logging.handlers.QueueHandler(queue))
    ready.set()
    start.wait()
    _log_calls(logger.info, 0, records)
    # The child's exit waits for the queue's feeder thread to have sent everything.


# -- (a) throughput ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds, None when it is gone."""
    from shmlog.shm.liveness import proc_stat

    fields = proc_stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ordered_count(path: str, expected: int, marker: str = "") -> tuple[int, bool]:
    """(lines of ``marker``'s records in ``path``, whether they are 0..expected-1 in order)."""
    wanted = 0
    in_order = True
    with open(path, encoding="utf-8") as source:
        for line in source:
            if marker not in line:
                continue
            if _body(wanted) not in line:
                in_order = False
            wanted += 1
    return wanted, in_order and wanted == expected


def throughput_shmlog(processes: int, records: int, workdir: str) -> dict[str, Any]:
    import shmlog

    ctx = fork_context()
    log_file = os.path.join(workdir, "shmlog.log")
    with shmlog.init(f"bench-logging-{os.getpid()}-{len(SESSIONS)}", log_file=log_file) as session:
        SESSIONS.append(session.name)
        owner = _shmlog_logger(f"bench-owner-{session.name}", log_file)
        owner.info("start")
        if not session.flush(timeout=60):  # the writer is up and idle before the clock runs
            raise RuntimeError("the log writer did not start")
        writer = session.writer_pid
        start = ctx.Event()
        ready = [ctx.Event() for _ in range(processes)]
        children = [ctx.Process(target=_shmlog_producer,
                                args=(w, log_file, records, ready[w], start))
                    for w in range(processes)]
        for child in children:
            child.start()
        try:
            wait_events(ready, children, "producers to be ready")
            cpu_before = _cpu_seconds(writer)
            t0 = time.perf_counter_ns()
            start.set()
            join_children(children)
            flushed = session.flush(timeout=CHILD_TIMEOUT)
            elapsed = time.perf_counter_ns() - t0
            cpu_after = _cpu_seconds(writer)
            same_writer = session.writer_pid == writer
        finally:
            start.set()
            join_children(children)
    path = os.path.join(workdir, "shmlog", "shmlog.log")
    counts = [_ordered_count(path, records, f"INFO - [worker{w}] ") for w in range(processes)]
    with open(path, encoding="utf-8") as source:
        dropped_reports = sum("were dropped" in line for line in source)
    seconds = elapsed / 1e9
    cpu = None
    if cpu_before is not None and cpu_after is not None and same_writer:
        cpu = (cpu_after - cpu_before) / seconds
    lines = sum(n for n, _ in counts)
    return {
        "records": processes * records, "lines": lines, "seconds": seconds,
        "rate": processes * records / seconds, "flushed": flushed,
        "complete": flushed and all(ok for _, ok in counts) and not dropped_reports,
        "writer_pid": writer, "writer_cpu_share": cpu, "dropped_reports": dropped_reports,
        "files": 1,
    }


def throughput_files(processes: int, records: int, workdir: str) -> dict[str, Any]:
    ctx = fork_context()
    paths = [os.path.join(workdir, f"file{w}.log") for w in range(processes)]
    start = ctx.Event()
    ready = [ctx.Event() for _ in range(processes)]
    children = [ctx.Process(target=_file_producer, args=(paths[w], records, ready[w], start))
                for w in range(processes)]
    for child in children:
        child.start()
    try:
        wait_events(ready, children, "producers to be ready")
        t0 = time.perf_counter_ns()
        start.set()
        join_children(children)
        elapsed = time.perf_counter_ns() - t0
    finally:
        start.set()
        join_children(children)
    counts = [_ordered_count(path, records) for path in paths]
    seconds = elapsed / 1e9
    return {
        "records": processes * records, "lines": sum(n for n, _ in counts), "seconds": seconds,
        "rate": processes * records / seconds, "complete": all(ok for _, ok in counts),
        "files": processes,
    }


class _PidMarker(logging.Filter):
    """Tags each record with its producer (the QueueHandler record keeps ``process``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[pid{record.process}] {record.msg}"
        return True


def throughput_queue(processes: int, records: int, workdir: str) -> dict[str, Any]:
    ctx = fork_context()
    path = os.path.join(workdir, "queue.log")
    queue = ctx.Queue()
    handler = _file_handler(path)
    handler.addFilter(_PidMarker())
    listener = logging.handlers.QueueListener(queue, handler)
    start = ctx.Event()
    ready = [ctx.Event() for _ in range(processes)]
    children = [ctx.Process(target=_queue_producer, args=(queue, records, ready[w], start))
                for w in range(processes)]
    for child in children:
        child.start()
    listener.start()
    try:
        wait_events(ready, children, "producers to be ready")
        t0 = time.perf_counter_ns()
        start.set()
        join_children(children)
        listener.stop()  # handles everything queued before it returns
        elapsed = time.perf_counter_ns() - t0
    finally:
        start.set()
        join_children(children)
        if listener._thread is not None:
            listener.stop()
        handler.close()
        queue.close()
        queue.join_thread()
    counts = [_ordered_count(path, records, f"INFO - [pid{child.pid}] ") for child in children]
    seconds = elapsed / 1e9
    return {
        "records": processes * records, "lines": sum(n for n, _ in counts), "seconds": seconds,
        "rate": processes * records / seconds, "complete": all(ok for _, ok in counts),
        "files": 1,
    }


def section_a(sizes: dict[str, int], workdir: str) -> dict[str, Any]:
    """Each variant ``repeats`` times, interleaved; the median run of each is reported."""
    variants = {"shmlog": throughput_shmlog, "files": throughput_files,
                "queue": throughput_queue}
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in variants}
    for repeat in range(sizes["repeats"]):
        # Every other round in the reverse order: no variant always goes first.
        order = list(variants.items()) if repeat % 2 == 0 else list(reversed(variants.items()))
        for key, measure in order:
            directory = os.path.join(workdir, f"a-{key}-{repeat}")
            os.makedirs(directory)
            runs[key].append(measure(sizes["processes"], sizes["records"], directory))
            shutil.rmtree(directory)
    result: dict[str, Any] = {}
    for key, measured in runs.items():
        median = sorted(measured, key=lambda run: run["rate"])[len(measured) // 2]
        result[key] = {**median, "all_rates": [run["rate"] for run in measured],
                       "complete": all(run["complete"] for run in measured)}
    shares = [run["writer_cpu_share"] for run in runs["shmlog"]
              if run["writer_cpu_share"] is not None]
    result["shmlog"]["writer_cpu_shares"] = shares
    return result


def print_a(a: dict[str, Any], sizes: dict[str, int]) -> None:
    processes, records = sizes["processes"], sizes["records"]
    print(f"(a) {processes} processes x {records:,} logger.info calls -> records on disk, "
          f"from the start signal until the last record is written "
          f"(median of {sizes['repeats']} run(s))")
    rows = [
        ("shmlog: record rings -> one writer (sidecar), 1 file", a["shmlog"]),
        (f"FileHandler per process, {processes} files", a["files"]),
        ("QueueHandler -> multiprocessing.Queue -> QueueListener, 1 file", a["queue"]),
    ]
    print(f"  {'variant':<64} {'records/s':>12} {'seconds':>9} {'lines':>9}  in order")
    for label, run in rows:
        print(f"  {label:<64} {run['rate']:>12,.0f} {run['seconds']:>9.3f} {run['lines']:>9,}"
              f"  {'yes' if run['complete'] else 'NO'}")
    shm = a["shmlog"]
    print(f"  ratios: shmlog / FileHandler per process = {shm['rate'] / a['files']['rate']:.2f}x, "
          f"shmlog / QueueHandler = {shm['rate'] / a['queue']['rate']:.2f}x")
    # Each round runs the variants back to back, so a round's ratio is
    # measured under one state of the machine.
    rounds = [m / f for m, f in zip(shm["all_rates"], a["files"]["all_rates"])]
    print(f"  shmlog / FileHandler per round: {', '.join(f'{r:.2f}x' for r in rounds)} "
          f"(median {statistics.median(rounds):.2f}x)")
    shares = shm["writer_cpu_shares"]
    if shares:
        print(f"  writer CPU: {statistics.median(shares) * 100:.0f}% of one core over the shmlog "
              f"run (utime+stime of pid {shm['writer_pid']} / wall time; runs: "
              f"{', '.join(f'{s * 100:.0f}%' for s in shares)})")
    else:
        print("  writer CPU: not measured (the writer changed during the run)")
    if shm["dropped_reports"]:
        print(f"  WARNING: the writer reported dropped records {shm['dropped_reports']} time(s)")


# -- (b) cost of one call ----------------------------------------------------------------------------


def _timed_calls(info: Callable[..., Any], calls: int, batch: int,
                 between: Callable[[], Any]) -> list[int]:
    """ns of each of ``calls`` calls, in batches with ``between()`` (untimed) after each."""
    clock = time.perf_counter_ns
    times: list[int] = []
    gc.collect()
    gc.disable()
    try:
        done = 0
        while done < calls:
            count = min(batch, calls - done)
            for i in range(done, done + count):
                t0 = clock()
                info(MESSAGE, 1, i, 100_000, 0.01, 0.5, 0.002)
                times.append(clock() - t0)
            done += count
            between()
    finally:
        gc.enable()
    return times


def _timer_floor(calls: int) -> float:
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        t0 = clock()
        times.append(clock() - t0)
    return statistics.median(times)


class _FormatOnly(logging.Handler):
    """A handler that formats each record (MMEngine's file format) and writes nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def _cost_round(log_file: str, file_path: str, queue: Any, calls: int, batch: int,
                reverse: bool) -> dict[str, Any]:
    """One round of (b), in one forked child: the four variants' calls in alternating batches.

    A forked child runs at one of the machine's speeds for its whole life, so
    the variants of a round share a process and take turns every ``batch``
    calls, each batch of the four in the reverse order of the one before.
    """
    import shmlog
    from shmlog.format.formatter import FILE_DATEFMT, MMFormatter

    session = shmlog.current_session()  # attached through the fork, as a DataLoader worker
    bare = _FormatOnly()
    bare.setFormatter(MMFormatter(color=False, datefmt=FILE_DATEFMT))
    file_handler = _file_handler(file_path)
    loggers = {
        "shmlog": _shmlog_logger(f"bench-cost-{os.getpid()}", log_file),
        "bare": _plain_logger(f"bench-cost-bare-{os.getpid()}", bare),
        "file": _plain_logger(f"bench-cost-file-{os.getpid()}", file_handler),
        "queue": _plain_logger(f"bench-cost-queue-{os.getpid()}",
                               logging.handlers.QueueHandler(queue)),
    }

    def drained() -> None:
        # Off the clock: the ring never fills, so no call waits for room.
        if not session.flush(timeout=60, everyone=False):
            raise RuntimeError("the log writer did not drain")

    between = {key: (drained if key == "shmlog" else lambda: None) for key in loggers}
    order = list(loggers)[::-1] if reverse else list(loggers)
    for key in order:  # warm-up: rings, handlers and files exist
        _timed_calls(loggers[key].info, batch, batch, between[key])
    times: dict[str, list[int]] = {key: [] for key in loggers}
    for done in range(0, calls, batch):
        for key in order:
            times[key] += _timed_calls(loggers[key].info, min(batch, calls - done), batch,
                                       between[key])
        order.reverse()
    file_handler.close()
    floor = _timer_floor(calls)
    return {key: {"median_ns": statistics.median(measured), "floor_ns": floor}
            for key, measured in times.items()}


def section_b(sizes: dict[str, int], workdir: str) -> dict[str, Any]:
    """``repeats`` rounds (a child each); the median of the rounds' medians per variant."""
    import shmlog

    calls, batch = sizes["calls"], sizes["batch"]
    runs: dict[str, list[dict[str, Any]]] = {"shmlog": [], "bare": [], "file": [], "queue": []}
    log_file = os.path.join(workdir, "b-shmlog.log")
    queue = fork_context().Queue()
    handler = _file_handler(os.path.join(workdir, "b-queue.log"))
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    try:
        with shmlog.init(f"bench-logging-b-{os.getpid()}", log_file=log_file) as session:
            SESSIONS.append(session.name)
            _shmlog_logger(f"bench-b-owner-{session.name}", log_file).info("start")
            if not session.flush(timeout=60):
                raise RuntimeError("the log writer did not start")
            for repeat in range(sizes["repeats"]):
                measured = run_reporting_child(
                    _cost_round, log_file, os.path.join(workdir, f"b-file-{repeat}.log"), queue,
                    calls, batch, repeat % 2 == 1)
                for key, run in measured.items():
                    runs[key].append(run)
    finally:
        listener.stop()
        handler.close()
        queue.close()
        queue.join_thread()
    return {key: {"median_ns": statistics.median(r["median_ns"] for r in measured),
                  "runs_ns": [r["median_ns"] for r in measured],
                  "floor_ns": measured[0]["floor_ns"]}
            for key, measured in runs.items()}


def print_b(b: dict[str, Any], sizes: dict[str, int]) -> None:
    print(f"(b) cost per logger.info call in a training process (forked child, DataLoader "
          f"worker of rank 0; median of {sizes['calls']:,} individually timed calls of each "
          f"variant, in alternating batches of {sizes['batch']} in one child per round; median "
          f"of {sizes['repeats']} round(s); message formatted with 6 arguments)")
    rows = [
        ("shmlog: MMLogger -> record ring (writer draining meanwhile)", b["shmlog"]),
        ("bare logging.Logger, handler that only formats (MMEngine's format)", b["bare"]),
        ("plain FileHandler (format + write + flush in the caller)", b["file"]),
        ("QueueHandler -> multiprocessing.Queue (listener in the parent)", b["queue"]),
    ]
    for label, run in rows:
        runs = ", ".join(format_ns(ns) for ns in run["runs_ns"])
        print(f"  {label:<68} {format_ns(run['median_ns']):>10}   (runs: {runs})")
    shm = b["shmlog"]["median_ns"]
    extra = shm - b["bare"]["median_ns"]
    # A round measures the variants in one process, taking turns, under one
    # state of the machine; the goal is judged on the median of the rounds'
    # differences.
    rounds = [m - r for m, r in zip(b["shmlog"]["runs_ns"], b["bare"]["runs_ns"])]
    paired = statistics.median(rounds)
    print(f"  shmlog - bare logger per round: "
          f"{', '.join(f'{d / 1e3:+.2f} us' for d in rounds)} (median {paired / 1e3:+.2f} us; "
          f"goal <= +1.50 us: {'ok' if paired <= 1500 else 'MISSED'})")
    print(f"  shmlog - bare logger = {extra / 1e3:+.2f} us (medians of the runs); "
          f"FileHandler / shmlog = {b['file']['median_ns'] / shm:.2f}x, "
          f"QueueHandler / shmlog = {b['queue']['median_ns'] / shm:.2f}x  "
          f"(timer floor {format_ns(b['shmlog']['floor_ns'])}, included in each figure)")


# -- (c) an idle session, and waking it ----------------------------------------------------------------


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (schedstat: not tick-rounded)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except OSError:
            continue
    return total


def _idle_share(pids: list[int], seconds: float) -> list[float]:
    before = [_cpu_ns(pid) for pid in pids]
    t0 = time.monotonic_ns()
    time.sleep(seconds)
    wall = time.monotonic_ns() - t0
    return [(_cpu_ns(pid) - b) / wall for pid, b in zip(pids, before)]


def _wait_for_size(path: str, size: int) -> None:
    deadline = time.monotonic() + 10
    while os.path.getsize(path) <= size:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path}: the line never arrived")


def _latency(log: Callable[[str], None], path: str, pings: int) -> list[float]:
    """ms from each call until its line is in ``path``, the writer asleep before each."""
    times = []
    for i in range(pings):
        time.sleep(0.1)  # long enough for the writer to have gone to sleep
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        log(f"ping {i}")
        _wait_for_size(path, size)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def section_c(sizes: dict[str, int], workdir: str) -> dict[str, Any]:
    import shmlog

    result: dict[str, Any] = {}
    # Reference: this process with no session at all.
    result["no_session"] = _idle_share([os.getpid()], sizes["idle_seconds"])[0]
    log_file = os.path.join(workdir, "c-shmlog.log")
    with shmlog.init(f"bench-logging-c-{os.getpid()}", log_file=log_file) as session:
        SESSIONS.append(session.name)
        logger = _shmlog_logger(f"bench-c-{session.name}", log_file)
        logger.info("start")
        if not session.flush(timeout=60):
            raise RuntimeError("the log writer did not start")
        writer = session.writer_pid
        time.sleep(0.5)  # past the first seconds of the writer
        result["writer"], result["member"] = _idle_share(
            [writer, os.getpid()], sizes["idle_seconds"])
        path = os.path.join(workdir, "c-shmlog", "c-shmlog.log")
        result["latency_ms"] = _latency(logger.info, path, sizes["pings"])
    # Reference: a QueueListener thread writing a FileHandler.
    queue = fork_context().Queue()
    path = os.path.join(workdir, "c-queue.log")
    handler = _file_handler(path)
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    logger = _plain_logger("bench-c-queue", logging.handlers.QueueHandler(queue))
    try:
        logger.info("start")
        _wait_for_size(path, 0)
        result["queue_latency_ms"] = _latency(logger.info, path, sizes["pings"])
    finally:
        listener.stop()
        handler.close()
        queue.close()
        queue.join_thread()
    return result


def print_c(c: dict[str, Any], sizes: dict[str, int]) -> None:
    print(f"(c) an idle session ({sizes['idle_seconds']:.1f} s; CPU from /proc/<pid>/task/*/schedstat)")
    print(f"  log writer (sidecar), idle:                       {c['writer'] * 100:.3f}% of a core "
          f"(goal <= 0.2%: {'ok' if c['writer'] <= 0.002 else 'MISSED'})")
    print(f"  member process (its standby thread), idle:        {c['member'] * 100:.3f}% of a core "
          f"(goal <= 0.2%: {'ok' if c['member'] <= 0.002 else 'MISSED'})")
    print(f"  reference: this process before the session:       {c['no_session'] * 100:.3f}%")
    ours, queue = sorted(c["latency_ms"]), sorted(c["queue_latency_ms"])
    print(f"  a record logged into the idle session -> in its file: median "
          f"{statistics.median(ours):.2f} ms, max {ours[-1]:.2f} ms over {len(ours)} "
          f"(goal <= 10 ms: {'ok' if ours[len(ours) // 2] <= 10 else 'MISSED'})")
    print(f"  reference: QueueHandler -> QueueListener thread -> file: median "
          f"{statistics.median(queue):.2f} ms, max {queue[-1]:.2f} ms")


# -- report ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="alternating runs of each variant in (a) and (b) (default: "
                             f"{FULL['repeats']}; more on a noisy machine)")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error(f"--repeats: expected an int >= 1, got {args.repeats}")
        sizes["repeats"] = args.repeats
    os.environ.pop("SHMLOG_SESSION", None)  # the benchmark makes its own sessions

    import shmlog

    started = time.perf_counter()
    shm_before = shm_entries()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    print(f"machine: {os.cpu_count()} CPUs ({usable} usable), {platform.machine()}, Linux "
          f"{platform.release()}; Python {platform.python_version()}, shmlog "
          f"{shmlog.__version__}{'  [--quick: tiny sizes, figures not meaningful]' if args.quick else ''}")
    print(f"load average at start: {load_average()}")
    report: dict[str, Any] = {"quick": args.quick, "sizes": sizes}
    workdir = tempfile.mkdtemp(prefix="bench-logging-")
    try:
        print()
        a = section_a(sizes, workdir)
        print_a(a, sizes)
        print()
        b = section_b(sizes, workdir)
        print_b(b, sizes)
        print()
        c = section_c(sizes, workdir)
        print_c(c, sizes)
        print()
        d = section_d(sizes, workdir, SESSIONS)
        print_d(d)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["a"], report["b"], report["c"], report["d"] = a, b, c, d

    print()
    from shmlog.shm.session import prefix

    ours = tuple(prefix(name) for name in SESSIONS)
    leaked = sorted(e for e in shm_entries() - shm_before if e.startswith(ours))
    if leaked:
        print(f"WARNING: {SHM_DIR} is not as found: this run left behind {leaked}")
    else:
        print(f"{SHM_DIR}: left as found ({len(SESSIONS)} sessions created and removed)")
    complete = all(a[key]["complete"] for key in ("shmlog", "files", "queue"))
    report["complete"] = complete
    report["shm_left_as_found"] = not leaked
    report["seconds"] = time.perf_counter() - started
    print(f"load average at end: {load_average()}")
    print(f"complete: {'yes' if complete else 'no'} (every file has exactly "
          f"{sizes['processes']} x {sizes['records']:,} lines, each process's in order); "
          f"total time {report['seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2, default=str)
            out.write("\n")
    return 0 if complete and not leaked else 2


if __name__ == "__main__":
    sys.exit(main())

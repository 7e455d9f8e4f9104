"""Exports of each logged step: ``scalars.jsonl`` and TensorBoard event files.

The log writer calls :meth:`Exports.write` with the ``tag`` dict LogProcessor
made for a step, the same values the step's line shows.  ``scalars.jsonl``
is one of the writer's committed files: every step once, whatever happens to
the writer.  TensorBoard goes
through tensorboardX when it is installed, else through PyTorch's writer
when torch and tensorboard are both installed; neither is needed otherwise.
It is written by a process of its own (:class:`TensorBoardProcess`, running
``python -m shmlog.writer.tensorboard``): importing tensorboardX holds
Python's global lock for long stretches (hundreds of milliseconds in C
extension set-up), so a thread of the log writer's would still hold up its
lines; a child process cannot.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import queue
import subprocess
import sys
import threading
from typing import Any

from ..wire import Progress

# Per-worker data time in exports: ``worker_data_time/node<N>/rank<r>/worker<w>``.
WORKER_EXPORT_PREFIX = "worker_data_time/"

TENSORBOARD_MISSING = (
    "tensorboard=True needs tensorboardX, or torch with tensorboard, installed "
    "(pip install 'shmlog[tensorboard]')"
)


def _torch_tensorboard_installed() -> bool:
    return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("tensorboard"))


def tensorboard_installed() -> bool:
    """Whether :func:`summary_writer` can make a writer (checked without importing one)."""
    return bool(importlib.util.find_spec("tensorboardX")) or _torch_tensorboard_installed()


def summary_writer(export_dir: str, wanted: bool | None) -> Any:
    """A SummaryWriter into ``<export_dir>/tensorboard``, or None.

    ``wanted`` None means "if installed": tensorboardX, else PyTorch's writer
    when both torch and tensorboard are installed.  True makes a missing one
    an error (``shmlog.init`` checks first); False turns the export off.
    """
    if wanted is False:
        return None
    logdir = os.path.join(export_dir, "tensorboard")
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(logdir)
    except ImportError:
        pass
    if _torch_tensorboard_installed():
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(logdir)
    if wanted:
        raise ImportError(TENSORBOARD_MISSING)
    return None


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value



# How long closing waits for the TensorBoard process to write what it was given.
TENSORBOARD_CLOSE_SECONDS = 60.0
# The program that writes the event files: steps come as JSON lines on its stdin.
TENSORBOARD_PROGRAM = (sys.executable, "-m", "shmlog.writer.tensorboard")


class TensorBoardProcess:
    """Writes TensorBoard scalars from a child process, so that the log writer never waits.

    A thread of the log writer starts the child and feeds it one JSON line
    per step (``[values, step]``); steps wait in a queue while the child
    starts, so neither its start nor a full pipe holds up a log line.  The
    child makes the SummaryWriter, writes and flushes each step, and closes
    the writer at the end of its input.  An error there is said once on
    stderr by the child, and the export stops.
    """

    def __init__(self, export_dir: str, wanted: bool | None) -> None:
        self._args = [*TENSORBOARD_PROGRAM, export_dir, {None: "auto", True: "on"}[wanted]]
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._feed, name="shmlog-tensorboard", daemon=True)
        self._thread.start()

    def add(self, values: dict[str, Any], step: int) -> None:
        self._queue.put((values, step))

    def _feed(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SHMLOG_SESSION"}
        try:
            child = subprocess.Popen(self._args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=env, text=True, close_fds=True)
        except OSError as exc:
            print(f"shmlog: TensorBoard export not started: {exc}", file=sys.stderr, flush=True)
            while self._queue.get() is not None:
                pass
            return
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                child.stdin.write(json.dumps(item) + "\n")
                child.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child stopped, and said why
        finally:
            try:
                child.stdin.close()
            except OSError:
                pass
            try:
                child.wait(TENSORBOARD_CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def close(self, timeout: float = TENSORBOARD_CLOSE_SECONDS) -> None:
        """Hand over every step given, and wait (up to ``timeout``) until they are written."""
        self._queue.put(None)
        self._thread.join(timeout)


class Exports:
    """Where the values of each logged step go besides the log line."""

    def __init__(self, writer: Any, export_dir: str, tensorboard: bool | None) -> None:
        # ``writer`` is the LogWriter: the JSON lines are one of its files,
        # committed with the batch that holds the step's progress marker.
        self._jsonl = writer.text_sink(os.path.join(export_dir, "scalars.jsonl"))
        self._tb: TensorBoardProcess | None = None
        if tensorboard is not False and (tensorboard or tensorboard_installed()):
            self._tb = TensorBoardProcess(export_dir, tensorboard)

    def write(self, tag: dict[str, Any], progress: Progress,
              workers: dict[str, float] | None = None) -> None:
        step = progress.iter + 1
        values = {k: _plain(v) for k, v in tag.items()}
        # Every rank's workers (of every node), when the ranks exchanged them;
        # else ``workers``: the logging rank's own.
        workers = (progress.reduced or {}).get("workers") or workers or {}
        values.update((f"{WORKER_EXPORT_PREFIX}{label}", v) for label, v in sorted(workers.items()))
        row = {"step": step, "mode": progress.mode, **values}
        self._jsonl.add(json.dumps(row) + "\n")
        if self._tb is not None:
            self._tb.add({name: value for name, value in values.items()
                          if isinstance(value, (int, float)) and name not in ("iter", "epoch")},
                         step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

"""Exports of each logged step: ``scalars.jsonl`` and TensorBoard event files.

The log writer calls :meth:`Exports.write` with the ``tag`` dict LogProcessor
made for a step, the same values the step's line shows.  ``scalars.jsonl``
is one of the writer's committed files: every step once, whatever happens to
the writer.  TensorBoard goes
through tensorboardX when it is installed, else through PyTorch's writer
when torch and tensorboard are both installed; neither is needed otherwise.
It is written by a thread of its own (:class:`TensorBoardThread`): importing
it, making its event file and flushing it never hold up a log line.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import queue
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
    """Whether :func:`_tensorboard` can make a writer (checked without importing one)."""
    return bool(importlib.util.find_spec("tensorboardX")) or _torch_tensorboard_installed()


def _tensorboard(export_dir: str, wanted: bool | None) -> Any:
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



# How long closing waits for the TensorBoard thread to write what it was given.
TENSORBOARD_CLOSE_SECONDS = 60.0


class TensorBoardThread:
    """Writes TensorBoard scalars from a thread, so that the log writer never waits for it.

    The SummaryWriter is made in the thread (importing tensorboardX takes
    seconds on a loaded machine); steps queue until it is ready.  An error
    there is said once on stderr, and the export stops.
    """

    def __init__(self, export_dir: str, wanted: bool | None) -> None:
        self._export_dir = export_dir
        self._wanted = wanted
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="shmlog-tensorboard", daemon=True)
        self._thread.start()

    def add(self, values: dict[str, Any], step: int) -> None:
        self._queue.put((values, step))

    def _run(self) -> None:
        writer = None
        try:
            writer = _tensorboard(self._export_dir, self._wanted)
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if writer is None:
                    continue
                values, step = item
                for name, value in values.items():
                    writer.add_scalar(name, value, step)
                if self._queue.empty():
                    writer.flush()
        except Exception as exc:  # noqa: BLE001 (the export must not take the writer down)
            print(f"shmlog: TensorBoard export stopped: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
        finally:
            if writer is not None:
                writer.close()

    def close(self, timeout: float = TENSORBOARD_CLOSE_SECONDS) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class Exports:
    """Where the values of each logged step go besides the log line."""

    def __init__(self, writer: Any, export_dir: str, tensorboard: bool | None) -> None:
        # ``writer`` is the LogWriter: the JSON lines are one of its files,
        # committed with the batch that holds the step's progress marker.
        self._jsonl = writer.text_sink(os.path.join(export_dir, "scalars.jsonl"))
        self._tb: TensorBoardThread | None = None
        if tensorboard is not False and (tensorboard or tensorboard_installed()):
            self._tb = TensorBoardThread(export_dir, tensorboard)

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

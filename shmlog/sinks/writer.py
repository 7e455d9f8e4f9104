"""The designated log writer: the one process on a node that writes log files.

Training processes only put records into their rings (see
``shmlog.api.record_handler``); this module drains every ring of the session
and writes what MMLogger would have written, to the files the seed's layout
names: ``<dir>/<stem>.log`` for rank 0 and ``<dir>/<stem>_rank<N>.log`` for
rank N when distributed logging is on.  Records of DataLoader workers go to
their rank's file, marked ``[worker<id>]``.

Across rings, records are written in the order they were created (a ring
that was empty when a pass began joins it within ``REPOLL_RECORDS``
records); within a ring, always in the order they were put.  A record is marked consumed right
after its file handler wrote (and flushed) it, so a successor that takes over
after a crash writes at most the one record in flight again.

When configured with a ``log_processor`` the writer also formats MMEngine's
iteration and epoch lines from the shared scalars (see :class:`ProgressLines`)
and exports each logged step's values to ``scalars.jsonl`` and, when
tensorboardX is installed, to TensorBoard event files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any

from ..readers.log_processor import LogProcessor
from .files import build_file_handler, log_file_for_rank
from .formatter import TERMINAL_DATEFMT, MMFormatter, TerminalHandler

_OPENED_KEY = "\x1fshmlog\x1fopened-files"
# Records written between two looks at the rings that had nothing to write.
REPOLL_RECORDS = 16


def _record(data: tuple[Any, ...]) -> logging.LogRecord:
    (created, levelno, levelname, name, message, pathname, func, lineno, exc_text,
     stack_info, _rank, worker, pid, _route) = data
    if worker >= 0:
        message = f"[worker{worker}] {message}"
    return logging.makeLogRecord({
        "name": name, "msg": message, "args": None, "levelno": levelno,
        "levelname": levelname, "pathname": pathname,
        "filename": os.path.basename(pathname), "module": os.path.splitext(
            os.path.basename(pathname))[0], "funcName": func, "lineno": lineno,
        "created": created, "msecs": (created - int(created)) * 1000,
        "exc_info": None, "exc_text": exc_text, "stack_info": stack_info, "process": pid,
    })


class LogWriter:
    """Drains a session's record rings into files (one instance per writer process)."""

    def __init__(self, segments: Any, per_node: bool = False) -> None:
        self._segments = segments
        # Called with the progress dict of each progress marker (see
        # ``shmlog.report_progress``), in the order the markers were put.
        self.on_progress: Any = None
        self._per_node = per_node
        # Handler per file path (several routes may name one file), None when
        # that rank writes no file.
        self._handlers: dict[tuple, logging.Handler | None] = {}
        self._by_path: dict[str, logging.Handler] = {}
        self._last_route: dict[int, tuple] = {}

    # -- files ---------------------------------------------------------------

    def _opened(self) -> set[str]:
        from ..shm import codec

        raw = self._segments.info_get(_OPENED_KEY)
        return set() if raw is None else set(codec.decode(raw))

    def _mark_opened(self, path: str) -> None:
        from ..shm import codec

        with self._segments.exclusive():
            opened = self._opened()
            opened.add(path)
            self._segments.info_set(_OPENED_KEY, codec.encode("opened files", sorted(opened)))

    def handler_for(self, route: tuple, rank: int) -> logging.Handler | None:
        key = (route, rank)
        if key in self._handlers:
            return self._handlers[key]
        log_file, distributed, world_size, mode, cfg_text, level = route
        path = log_file_for_rank(log_file, rank, world_size, distributed, level, self._per_node)
        handler = None
        if path is not None:
            handler = self._by_path.get(path)
            if handler is None:
                # A file a previous writer of this session opened is continued,
                # never truncated again.
                if path in self._opened():
                    mode = "a"
                cfg = None if cfg_text is None else json.loads(cfg_text)
                try:
                    handler = build_file_handler(
                        log_file, rank, world_size, distributed, mode, cfg, level, self._per_node
                    )
                except OSError as exc:
                    # One file that cannot be opened must not stop the writer
                    # (and every other process's file with it).
                    print(f"shmlog: cannot open log file {path}: {exc}; records for it are "
                          f"not written", file=sys.stderr)
                    handler = None
                if handler is not None:
                    self._mark_opened(path)
                    self._by_path[path] = handler
        self._handlers[key] = handler
        return handler

    # -- records ---------------------------------------------------------------

    def drain(self) -> int:
        """Write every pending record (oldest first across rings); returns how many."""
        consumers = self._segments.record_consumers()
        heads: dict[int, tuple] = {}
        for index, consumer in enumerate(consumers):
            record = consumer.next()
            if record is not None:
                heads[index] = record
        done = 0
        while heads:
            index = min(heads, key=lambda i: heads[i][0])
            data = heads[index]
            consumer = consumers[index]
            self._write(data, consumer.writer)
            consumer.done()
            done += 1
            record = consumer.next()
            if record is None:
                del heads[index]
            else:
                heads[index] = record
            if done % REPOLL_RECORDS == 0:
                # Busy producers can keep one pass going indefinitely: rings
                # that were empty when it began, or appeared since, join it
                # here instead of waiting for its end (their producers would
                # block, then drop).
                consumers = self._segments.record_consumers()
                for other, waiting in enumerate(consumers):
                    if other not in heads:
                        record = waiting.next()
                        if record is not None:
                            heads[other] = record
        for consumer in consumers:
            self._report_drops(consumer)
        return done

    def _write(self, data: tuple[Any, ...], writer_slot: int) -> None:
        if data[1] is None:  # a progress marker: (created, None, progress)
            if self.on_progress is not None:
                self.on_progress(data[2])
            return
        route, rank = data[13], data[10]
        self._last_route[writer_slot] = (route, rank)
        handler = self.handler_for(route, rank)
        if handler is not None:
            handler.handle(_record(data))

    def _report_drops(self, consumer: Any) -> None:
        dropped = consumer.unreported_drops()
        if not dropped:
            return
        label = self._segments.writer_labels().get(consumer.writer, f"writer{consumer.writer}")
        message = (
            f"shmlog: {dropped} log record(s) from {label} were dropped because its record "
            f"ring stayed full (the log writer could not keep up)"
        )
        # Reported in the file the dropped records were going to, where the
        # gap is (a rank's own file, or rank 0's for its workers).
        last = self._last_route.get(consumer.writer)
        handler = None if last is None else self.handler_for(*last)
        record = logging.makeLogRecord({
            "name": "shmlog", "msg": message, "levelno": logging.WARNING,
            "levelname": "WARNING",
        })
        if handler is not None:
            handler.handle(record)
        else:
            print(message, file=sys.stderr)
        consumer.mark_reported(dropped)

    def close(self) -> None:
        for handler in self._by_path.values():
            handler.close()
        self._by_path.clear()
        self._handlers.clear()


class ProgressLines:
    """MMEngine's iteration and epoch lines, made by the writer from shared state.

    At every logging step the training loop's ``shmlog.report_progress``
    puts a progress marker into its record ring; when the writer reaches it
    (never skipping one, in order with the log records around it), it
    formats the line LogProcessor gives for the shared scalars, with ``eta``
    computed from the ``train/time`` statistics.
    """

    def __init__(
        self,
        hub: Any,
        processor_cfg: dict[str, Any],
        interval: int,
        log_file: str | None,
        logger_name: str = "mmengine",
        export_dir: str | None = None,
        tensorboard: bool | None = None,
    ) -> None:
        self._hub = hub
        self.processor = LogProcessor(**processor_cfg)
        self.interval = interval
        self._terminal = TerminalHandler(sys.stdout)
        self._terminal.setFormatter(MMFormatter(color=True, datefmt=TERMINAL_DATEFMT))
        self._logger_name = logger_name
        self._log_file = log_file
        self._file: logging.Handler | None = None
        self._jsonl = None
        self._tb: Any = None
        if export_dir is not None:
            os.makedirs(export_dir, exist_ok=True)
            self._jsonl = open(  # noqa: SIM115 (kept open for the writer's life)
                os.path.join(export_dir, "scalars.jsonl"), "a", encoding="utf-8"
            )
            self._tb = _tensorboard(export_dir, tensorboard)

    def bind_file(self, writer: LogWriter) -> None:
        if self._log_file is not None:
            from ..api.record_handler import make_route

            route = make_route(self._log_file, False, 1, "w", None, logging.INFO)
            self._file = writer.handler_for(route, 0)

    def handle(self, progress: dict[str, Any]) -> None:
        """Format, print, write and export the line for one progress marker."""
        try:
            tag, line = self._format(progress)
        except (KeyError, ValueError, TypeError) as exc:
            line, tag = f"shmlog: cannot format the line for {progress}: {exc}", None
        self._emit(line)
        if tag is not None:
            self._export(tag, progress)

    def _format(self, p: dict[str, Any]) -> tuple[dict, str]:
        mode = p.get("mode", "train")
        view = _EtaView(self._hub, p, self.processor)
        common = {
            "iter": int(p.get("iter", 0)), "epoch": int(p.get("epoch", 0)),
            "max_iters": p.get("max_iters"), "max_epochs": p.get("max_epochs"),
        }
        if p.get("event", "iter") == "epoch_end":
            return self.processor.format_epoch(
                view, mode, int(p.get("batch_idx", 0)),
                dataloader_len=p.get("dataloader_len"), **common,
            )
        return self.processor.format_iter(
            view, mode, int(p.get("batch_idx", 0)), dataloader_len=p.get("dataloader_len"),
            **common,
        )

    def _emit(self, line: str) -> None:
        record = logging.makeLogRecord({
            "name": self._logger_name, "msg": line, "levelno": logging.INFO,
            "levelname": "INFO",
        })
        self._terminal.handle(record)
        if self._file is not None:
            self._file.handle(record)

    def _export(self, tag: dict[str, Any], p: dict[str, Any]) -> None:
        step = int(p.get("iter", 0)) + 1
        values = {k: _plain(v) for k, v in tag.items()}
        if self._jsonl is not None:
            row = {"step": step, "mode": p.get("mode", "train"), **values}
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and name not in ("iter", "epoch"):
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def progress_due(progress: dict[str, Any], interval: int, by_epoch: bool) -> bool:
    """Whether MMEngine's LoggerHook would log at this step (``ignore_last`` default)."""
    if progress.get("event", "iter") == "epoch_end":
        return True
    if progress.get("mode", "train") == "train" and not by_epoch:
        return (int(progress.get("iter", 0)) + 1) % interval == 0
    return (int(progress.get("batch_idx", 0)) + 1) % interval == 0


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _EtaView:
    """The hub as LogProcessor reads it at the marker's time, with ``eta`` computed.

    ``hub`` is the session's view of a hub (``SharedHub``): its scalars are
    read as they were when the marker was put (``at_ns``), so the line is the
    one the training process would have formatted then, however far behind
    the writer is.
    """

    def __init__(self, hub: Any, progress: dict[str, Any], processor: LogProcessor) -> None:
        self._hub = hub
        self._progress = progress
        self.log_scalars = hub.log_scalars(until=progress.get("at_ns"))
        self._window = processor.window_size

    def get_info(self, key: str, default: Any = None) -> Any:
        if key == "eta":
            return self._eta(default)
        return self._hub.get_info(key, default)

    @property
    def runtime_info(self) -> Any:
        return self._hub.runtime_info()

    def _eta(self, default: Any) -> Any:
        buffer = self.log_scalars.get("train/time")
        max_iters = self._progress.get("max_iters")
        if buffer is None or not max_iters:
            return self._hub.get_info("eta", default)
        remaining = int(max_iters) - int(self._progress.get("iter", 0)) - 1
        return float(buffer.mean(self._window)) * max(remaining, 0)


TENSORBOARD_MISSING = (
    "tensorboard=True needs tensorboardX, or torch with tensorboard, installed "
    "(pip install 'shmlog[tensorboard]')"
)


def _torch_tensorboard_installed() -> bool:
    import importlib.util

    return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("tensorboard"))


def tensorboard_installed() -> bool:
    """Whether :func:`_tensorboard` can make a writer (checked without importing one)."""
    import importlib.util

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

"""Draining every record ring of a session into the files MMLogger would have written.

Training processes only put records into their rings (``shmlog.api.record_handler``);
the designated writer drains every ring of the session and writes what each
record's MMLogger would have written, to the files the seed's layout names:
``<dir>/<stem>.log`` for rank 0 and ``<dir>/<stem>_rank<N>.log`` for rank N
when distributed logging is on.  Records of DataLoader workers go to their
rank's file, marked ``[worker<id>]``.

Across rings, records are written in the order they were created (a ring
that was empty when a pass began joins it within ``REPOLL_RECORDS``
records); within a ring, always in the order they were put.  A record is
marked consumed right after its file handler wrote (and flushed) it, so a
successor that takes over after a crash writes at most the one record in
flight again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..format.files import build_file_handler, log_file_for_rank
from ..shm import codec
from ..wire import OPENED_FILES_KEY, LogRecordData, Progress, Route, is_progress_marker

# Records written between two looks at the rings that had nothing to write.
REPOLL_RECORDS = 16


def to_log_record(data: LogRecordData) -> logging.LogRecord:
    """The LogRecord a file handler formats, rebuilt from the plain data."""
    message = data.message
    if data.worker >= 0:
        message = f"[worker{data.worker}] {message}"
    pathname = data.pathname
    return logging.makeLogRecord({
        "name": data.name, "msg": message, "args": None, "levelno": data.levelno,
        "levelname": data.levelname, "pathname": pathname,
        "filename": os.path.basename(pathname),
        "module": os.path.splitext(os.path.basename(pathname))[0], "funcName": data.func,
        "lineno": data.lineno, "created": data.created,
        "msecs": (data.created - int(data.created)) * 1000, "exc_info": None,
        "exc_text": data.exc_text, "stack_info": data.stack_info, "process": data.pid,
    })


class LogWriter:
    """Drains a session's record rings into files (one instance per writer process)."""

    def __init__(self, segments: Any, per_node: bool = False) -> None:
        self._segments = segments
        # Called with the Progress of each progress marker (see
        # ``shmlog.report_progress``), in the order the markers were put.
        self.on_progress: Callable[[Progress], None] | None = None
        self._per_node = per_node
        # Handler per file path (several routes may name one file), None when
        # that rank writes no file.
        self._handlers: dict[tuple, logging.Handler | None] = {}
        self._by_path: dict[str, logging.Handler] = {}
        self._last_route: dict[int, tuple[Route, int]] = {}

    # -- files ---------------------------------------------------------------

    def _opened(self) -> set[str]:
        raw = self._segments.info_get(OPENED_FILES_KEY)
        return set() if raw is None else set(codec.decode(raw))

    def _mark_opened(self, path: str) -> None:
        with self._segments.exclusive():
            opened = self._opened()
            opened.add(path)
            self._segments.info_set(OPENED_FILES_KEY, codec.encode("opened files", sorted(opened)))

    def handler_for(self, route: Route, rank: int) -> logging.Handler | None:
        """The handler rank ``rank`` would use for ``route``; None if it writes no file."""
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
        if is_progress_marker(data):
            if self.on_progress is not None:
                self.on_progress(Progress._make(data[2]))
            return
        record = LogRecordData._make(data)
        route = Route._make(record.route)
        self._last_route[writer_slot] = (route, record.rank)
        handler = self.handler_for(route, record.rank)
        if handler is not None:
            handler.handle(to_log_record(record))

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



"""The files the log writer appends to, in batches, each able to go back to a committed length.

A :class:`Sink` collects the text of a batch and writes it with one write and
one flush when the writer commits (``shmlog.writer.commit``); its
:meth:`Sink.state` (inode, length) is what the commit records.  A successor
that finds more bytes than committed truncates the file back, so a writer
killed at any instant repeats nothing.

No record's content stops the lines around it: text the file's encoding
cannot hold is written escaped (see :func:`write_escaping`).

Faults are the file's own, never the writer's: a file that cannot be
written (a full disk, a read-only mount) costs its own records, which are
counted; one message says so on stderr when writing starts failing, and a
note in the file gives the count once writing works again (or stderr at
close).  After a failure the file is tried again only once its file system
has ``RESUME_BYTES`` free, so a nearly full disk does not flap between
failing and working.  A file removed while it is written (its directory deleted, say) is
noticed at the next flush: the directory and the file are made again and
the batch goes into the new file, with a note.

:class:`LogSink` writes log records through the handler their MMLogger would
have used (level, filters, format, rotation).  For the handlers shmlog builds
(``shmlog.format.files.build_file_handler``: MMEngine's file layout, the
duplicate-warning filter) it formats records itself, with the timestamp
made once a second; the plainest records (below WARNING, no traceback)
arrive as lines already made in the process that logged them (a
``LogLine``) and are only appended.  That is what lets one writer keep up
with many processes.
Rotating handlers roll over between two commits: the writer commits what the
old file holds, rolls over, and commits the new file's baseline.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ..format.files import open_output
from ..format.formatter import FileLines, formats_file_lines
from ..wire import LogLine, LogRecordData

# After a failed write, writing resumes once the file system has this much room.
RESUME_BYTES = 64 << 10


def write_escaping(stream: TextIO, text: str) -> None:
    """Write ``text``; characters the file's encoding cannot hold are written escaped.

    A lone surrogate (text decoded with ``surrogateescape``, say) or a
    character outside a narrower encoding goes in as its Python escape
    (``\\udc80``, ``\\xe9``) instead of failing the whole batch.  A text
    stream encodes before it buffers, so a refused write left nothing behind.
    """
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


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


class Sink:
    """A file appended to in batches; subclasses say how its stream is opened."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._texts: list[str] = []
        self._lost = 0  # records dropped since writing started failing
        self._failure: str | None = None
        self._good = self._identity()  # (inode, length) after the last good flush

    # -- what subclasses provide ----------------------------------------------------

    def stream(self) -> TextIO:
        raise NotImplementedError

    def reopen(self) -> None:
        """Open the file anew in append mode (after it vanished or a write failed)."""
        raise NotImplementedError

    def note(self, message: str) -> str | None:
        """The line that tells a reader of the file about ``message`` (None: stderr only)."""
        return None

    # -- writing -----------------------------------------------------------------------

    def add(self, text: str) -> None:
        self._texts.append(text)

    def adder(self) -> Callable[[str], None]:
        """:meth:`add` without the method call (the batch list lives as long as the sink)."""
        return self._texts.append

    def pending(self) -> int:
        return len(self._texts)

    def flush(self) -> None:
        """Write and flush the batch; a fault costs its records and is reported once."""
        texts = self._texts
        if not texts and self._failure is None:
            return
        records, batch = len(texts), "".join(texts)
        texts.clear()  # in place: see adder()
        if self._failure is not None and not self._room():
            self._lost += records  # still failing: not even tried
            return
        try:
            notes = []
            if self._vanished():
                self.reopen()
                notes.append(f"shmlog: {self.path} was removed while the run wrote it; "
                             f"logging continues in a new file")
            if self._failure is not None and self._lost:
                notes.append(f"shmlog: {self._lost} log record(s) for this file were lost while "
                             f"it could not be written ({self._failure})")
            lines = [line for line in map(self.note, notes) if line is not None]
            stream = self.stream()
            write_escaping(stream, "".join(lines) + batch if lines else batch)
            stream.flush()
        except OSError as exc:
            self._failed(exc, records)
            return
        if self._failure is not None:
            self._failure, self._lost = None, 0
        self._good = self._identity()

    def _vanished(self) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return True
        stream = self.stream()
        return named.st_ino != os.fstat(stream.fileno()).st_ino

    def _room(self) -> bool:
        """Whether the file's file system has room again (or cannot say)."""
        try:
            fs = os.statvfs(os.path.dirname(self.path) or ".")
        except OSError:
            return True  # the directory is gone: trying makes it again
        return fs.f_bavail * fs.f_frsize >= RESUME_BYTES

    def _failed(self, exc: OSError, records: int) -> None:
        if self._failure is None:
            print(f"shmlog: cannot write log file {self.path}: {exc}; its records are counted "
                  f"and dropped until it can be written again", file=sys.stderr, flush=True)
        self._failure = exc.strerror or str(exc)
        self._lost += records
        # Whatever part of the batch reached the file goes; the stream's
        # buffer, which would be written again at the next flush, too.
        try:
            self.reopen()
            if self._good is not None:
                os.truncate(self.path, self._good[1])
        except OSError:
            pass

    def _identity(self) -> tuple[int, int] | None:
        try:
            info = os.fstat(self.stream().fileno())
        except (OSError, ValueError, AttributeError):
            return None
        return info.st_ino, info.st_size

    def state(self) -> tuple[int, int] | None:
        """(inode, length) of what the file holds for good, for the commit."""
        return self._good

    def close(self) -> None:
        self.flush()
        if self._failure is not None and self._lost:
            print(f"shmlog: {self._lost} log record(s) for {self.path} were lost: it could not "
                  f"be written ({self._failure})", file=sys.stderr, flush=True)


class LogSink(Sink):
    """A log file, written through the handler its records' MMLogger would have built."""

    def __init__(self, handler: logging.FileHandler,
                 before_rollover: Callable[[], None]) -> None:
        self.handler = handler
        self._before_rollover = before_rollover
        self._rotating = isinstance(handler, logging.handlers.BaseRotatingHandler)
        self._watched = isinstance(handler, logging.handlers.WatchedFileHandler)
        self._fast = formats_file_lines(handler)
        self._seen = handler.filters[0].seen if self._fast else None
        self._lines = FileLines(handler.formatter.converter) if self._fast else None
        super().__init__(os.path.abspath(handler.baseFilename))

    @property
    def rotates(self) -> bool:
        """Whether the file rolls over (each line must then pass :meth:`write`)."""
        return self._rotating

    def stream(self) -> TextIO:
        handler = self.handler
        if handler.stream is None:
            handler.stream = handler._open()
        return handler.stream

    def reopen(self) -> None:
        handler = self.handler
        stream, handler.stream = handler.stream, None
        if stream is not None:
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        handler.mode = "a"
        handler.stream = handler._open()

    def note(self, message: str) -> str:
        record = logging.makeLogRecord({
            "name": "shmlog", "msg": message, "levelno": logging.WARNING, "levelname": "WARNING",
        })
        return self.handler.format(record) + self.handler.terminator

    def write(self, data: LogRecordData | LogLine) -> None:
        """Add one record (decoded by ``wire.decode_entry``) to the batch, as the handler would
        have written it."""
        if data.levelno < self.handler.level:
            return
        if type(data) is LogLine:
            # Its process made the line this handler makes (see
            # ``shmlog.api.record_handler``), its filter passes it.
            if type(data.text) is not str:
                raise TypeError(f"a LogLine's text must be a str, got {type(data.text).__name__}")
            if self._rotating:
                self._add_rolling(logging.makeLogRecord(
                    {"created": data.created, "levelno": data.levelno, "msg": ""}), data.text)
            else:
                self._texts.append(data.text)
            return
        if self._fast:
            text = self._format(data)
            if text is not None:
                self._texts.append(text)
            return
        record = to_log_record(data)
        if not self.handler.filter(record):
            return
        try:
            self._add_rolling(record, self.handler.format(record) + self.handler.terminator)
        except Exception:  # noqa: BLE001 (a handler's own failure, reported as logging does)
            self.handler.handleError(record)

    def _add_rolling(self, record: logging.LogRecord, text: str) -> None:
        """Add ``text``, rolling a rotating handler's file over first when it says so."""
        if self._rotating and self._should_roll(record, text):
            self._before_rollover()  # the writer commits what the old file holds
            self.handler.doRollover()
            self._good = self._identity()
            self._before_rollover()  # and the new file's baseline
        self._texts.append(text)

    def _should_roll(self, record: logging.LogRecord, text: str) -> bool:
        handler = self.handler
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            # The size the file will have: written, plus this batch, plus the
            # record (counted in characters, as the handler itself counts).
            if handler.maxBytes <= 0:
                return False
            size = (self._good[1] if self._good else 0) + sum(map(len, self._texts))
            return size > 0 and size + len(text) >= handler.maxBytes
        return bool(handler.shouldRollover(record))

    def write_record(self, record: logging.LogRecord) -> None:
        """Add a LogRecord made in the writer (progress lines, drop reports)."""
        if record.levelno >= self.handler.level and self.handler.filter(record):
            self._texts.append(self.handler.format(record) + self.handler.terminator)

    def _format(self, data: LogRecordData) -> str | None:
        # MMFormatter(color=False, datefmt=FILE_DATEFMT), field by field, the
        # timestamp made once a second.
        created, levelno, levelname, name = data.created, data.levelno, data.levelname, data.name
        message, worker, exc_text, stack_info = data.message, data.worker, data.exc_text, \
            data.stack_info
        if worker >= 0:
            message = f"[worker{worker}] {message}"
        if levelno == logging.WARNING:
            if message in self._seen:
                return None
            self._seen.add(message)
        if levelno >= logging.ERROR:
            text = (f"{self._lines.asctime(created)} - {name} - {levelname} - {data.pathname} - "
                    f"{data.func} - {data.lineno} - {message}")
        elif not exc_text and not stack_info:
            return self._lines.plain(created, name, levelname, message)
        else:
            text = f"{self._lines.asctime(created)} - {name} - {levelname} - {message}"
        if exc_text:
            text = text + exc_text if text.endswith("\n") else f"{text}\n{exc_text}"
        if stack_info:
            text = text + stack_info if text.endswith("\n") else f"{text}\n{stack_info}"
        return text + "\n"

    def flush(self) -> None:
        if self._watched and self._texts:
            self.handler.reopenIfNeeded()
        super().flush()

    def close(self) -> None:
        super().close()
        self.handler.close()


class TextSink(Sink):
    """A plain text file the writer owns (``scalars.jsonl``), opened as log files are."""

    def __init__(self, path: str, mode: str = "a") -> None:
        self._path = path
        self._stream: Any = open_output(path, mode)
        super().__init__(path)

    def stream(self) -> TextIO:
        return self._stream

    def reopen(self) -> None:
        try:
            self._stream.close()
        except (OSError, ValueError):
            pass
        self._stream = open_output(self._path, "a")

    def close(self) -> None:
        super().close()
        self._stream.close()

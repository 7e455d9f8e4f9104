"""MMLogger's file output, routed through the session when there is one.

Inside a session a training process never opens or writes log files: each
record is reduced to plain data (message already formatted, traceback already
rendered, as ``logging.handlers.QueueHandler`` does) and put into this
process's record ring.  The designated log writer turns it back into a
LogRecord and hands it to the file handler the record's rank would have
used.  For the common record (below WARNING, no traceback, MMEngine's file
layout) the data is the finished line instead, a ``LogLine``: making it here
costs about what building the fields does, and the writer, which serves
every process, only appends it.  A formatter the user set on the handler
makes its lines here too, for every record (the writer knows only the
route's layout).  Outside a session the same handler writes the file itself.

A full ring waits at most ``shipping.BLOCK_SECONDS`` for the writer to make room and
then drops the record, counting it; the writer reports every drop in the log.
After a drop, records are dropped at once (still counted) until the ring has
room again, so a stalled writer costs a training step at most one wait.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from typing import Any

from ..format.files import build_file_handler
from ..format.formatter import DuplicateWarningFilter, FileLines, formats_file_lines
from ..shm import codec
from ..shm.liveness import is_alive
from ..wire import Progress, Route, encode_line, encode_progress, encode_record, route_id, route_key
from .config import record_ring_bytes
from .process import PROCESS, identity
from .shipping import put_into

# Put into this process's record ring (tests replace it to see what crosses).
_put_into = put_into


def make_route(
    log_file: str | os.PathLike[str],
    distributed: bool,
    world_size: int,
    mode: str,
    cfg: dict[str, Any] | None,
    level: int,
) -> Route:
    """Where a record goes, as plain data: what ``build_file_handler`` needs."""
    cfg_text = None if cfg is None else json.dumps(cfg, sort_keys=True, default=str)
    return Route(os.path.abspath(log_file), bool(distributed), int(world_size), mode, cfg_text,
                 int(level))


class SessionFileHandler(logging.FileHandler):
    """A file handler that ships records to the session's log writer, or writes them itself.

    MMLogger builds one of :func:`session_file_handler_class` ``(cls)`` for
    the handler class its config names (``cls`` is FileHandler,
    RotatingFileHandler, ...), so outside a session it *is* that handler and
    writes the file as ``cls`` would.  Inside one it opens no file: every
    record goes to the session's designated writer, which builds the same
    handler from :attr:`route`.  Built with ``delay=True`` inside a session,
    it creates the file only if it ever writes a record itself.
    """

    route: Route
    _rank = 0
    _who: tuple[int, int, int] | None = None  # (pid, rank, worker id)
    # (session, pid, its segments, FileLines, worker mark, rank, _ring_of(segments),
    # the filters then) once a LogLine was shipped from this process into that
    # session: see handle().
    _line_to: tuple | None = None

    def bind(self, route: Route, rank: int) -> SessionFileHandler:
        """Ship records along ``route`` as rank ``rank``'s; returns the handler."""
        self.route = route
        self._rank = rank
        self._who = self._line_to = None
        self._created_ns = time.time_ns()
        self._shipped = False
        # The file was already created (and truncated for mode 'w'): the log
        # writer must append to it, not truncate it again, and this process,
        # when it logs outside the session again, must write after what the
        # writer added rather than over it from its old position.
        if self.stream is not None and route.mode.startswith("w"):
            self.route = route._replace(mode="a")
            _append_only(self)
        self._route_id = route_id(self.route)
        # The lines the writer's handler for the route makes, made here (the
        # same builder made both handlers); a formatter set on this handler
        # afterwards turns it off, as the writer would not know of it.
        self._line_formatter = self.formatter if formats_file_lines(self) else None
        # The formatter the writer's handler has too; another one set on this
        # handler makes the lines here (see _ship_formatted).
        self._built_formatter = self.formatter
        self._lines = None if self._line_formatter is None else FileLines(self.formatter.converter)
        # Sessions (by generation) this handler's route is stored in.
        self._route_stored: set[int] = set()
        return self

    def handle(self, record: logging.LogRecord) -> bool:
        """Ship without the handler lock (the ring has its own); write locally with it."""
        session = PROCESS.session
        line = self._line_to
        if (line is not None and line[0] is session and not line[2].closed
                and line[1] == record.process and self.filters == line[7]
                and self._crosses_as_line(record)):
            # The common record, shipped as a LogLine with what _ship found out
            # about this process and session the first time (the handler's
            # filters are still the duplicate-warning filter alone, which the
            # writer applies).
            try:
                lines, mark, rank, ring = line[3:7]
                message = record.getMessage()
                _put_into(ring, encode_line(record.created, record.levelno,
                                            lines.plain(record.created, record.name,
                                                        str(record.levelname),
                                                        mark + message if mark else message),
                                            rank, self._route_id))
            except Exception:  # noqa: BLE001 (logging must never raise into the caller)
                self.handleError(record)
            return True
        if session is None or session.closed or not session.ships_records:
            return super().handle(record)  # attaches from the environment, or writes itself
        filters = self.filters
        # The writer's handler has the duplicate-warning filter too (made by
        # build_file_handler), and applies it to every process's records:
        # only filters added to this handler run here.
        if filters and (len(filters) > 1 or type(filters[0]) is not DuplicateWarningFilter) \
                and not self.filter(record):
            return False
        try:
            self._ship(session, record)
        except Exception:  # noqa: BLE001 (logging must never raise into the caller)
            self.handleError(record)
        return True

    def _crosses_as_line(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` crosses as a LogLine: below WARNING, with no traceback
        or stack, through this handler's own MMEngine file layout."""
        return (record.levelno < logging.WARNING and self._lines is not None
                and self.formatter is self._line_formatter
                and not record.exc_info and not record.exc_text and not record.stack_info)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Raises when SHMLOG_SESSION names a session that is gone.
            shared = PROCESS.token is not None and PROCESS.current()
        except Exception:  # noqa: BLE001 (logging must never raise into the caller)
            self.handleError(record)
            return
        if shared and shared.ships_records:
            try:
                self._ship(shared, record, filtered=True)
            except Exception:  # noqa: BLE001 (logging must never raise into the caller)
                self.handleError(record)
            return
        super().emit(record)

    def _open(self) -> Any:
        """Open the file at the first record this process writes itself.

        MMEngine's mode 'w' truncates once, when the logger is made.  A file
        written since then (by the log writer, for this process or others)
        holds this logger's own run, so it is continued, never truncated.
        """
        os.makedirs(os.path.dirname(self.baseFilename) or ".", exist_ok=True)
        if self.mode.startswith("w") and self._written_since_made():
            self.mode = "a"
        return super()._open()

    def _written_since_made(self) -> bool:
        if getattr(self, "_shipped", False):
            return True
        try:
            return os.stat(self.baseFilename).st_mtime_ns >= self._created_ns
        except (OSError, AttributeError):  # no file yet, or not bound yet
            return False

    def _ship(self, session: Any, record: logging.LogRecord, filtered: bool = False) -> None:
        """Put ``record`` into this process's ring (``filtered``: this handler's
        filters have already passed it)."""
        message = record.getMessage()
        who = self._who
        if who is None or who[0] != record.process:
            # Once per process (a forked child has another pid): the identity
            # reads the environment, too slow to do for every record.
            me = identity()
            who = self._who = (record.process, me.rank if me.distributed else self._rank,
                               me.worker)
        shared = session.shared
        if shared.generation not in self._route_stored:
            # Once per session: records name the route by id, the writer looks it up.
            shared.info_set(route_key(self._route_id),
                            codec.encode("log route", tuple(self.route)))
            self._route_stored.add(shared.generation)
        self._shipped = True
        if self.formatter is not self._built_formatter:
            self._ship_formatted(shared, record, who[1], filtered)
            return
        if self._crosses_as_line(record):
            lines, ring = self._lines, _ring_of(shared)
            mark = f"[worker{who[2]}] " if who[2] >= 0 else ""
            filters = self.filters
            if len(filters) == 1 and type(filters[0]) is DuplicateWarningFilter:
                self._line_to = (session, record.process, shared, lines, mark, who[1], ring,
                                 list(filters))
            message = mark + message
            _put_into(ring, encode_line(record.created, record.levelno,
                                        lines.plain(record.created, record.name,
                                                    str(record.levelname), message),
                                        who[1], self._route_id))
            return
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = _FORMATTER.formatException(record.exc_info)
        _put(shared, encode_record(
            record.created, record.levelno, record.levelname, record.name, message,
            record.pathname, record.funcName, record.lineno, exc_text, record.stack_info,
            who[1], who[2], who[0], self._route_id,
        ))

    def _ship_formatted(self, shared: Any, record: logging.LogRecord, rank: int,
                        filtered: bool) -> None:
        """Ship ``record`` as the line a formatter set on this handler makes.

        The writer's handler knows only the layout the route names, and the
        record's own attributes (``extra``) do not cross: the line is made
        here, with this handler's formatter, filters and terminator, and the
        writer appends it (deciding rotation as the handler would).
        """
        filters = self.filters
        if not filtered and len(filters) == 1 and type(filters[0]) is DuplicateWarningFilter \
                and not filters[0].filter(record):
            return  # (other filters ran in handle())
        text = self.format(record) + self.terminator
        _put(shared, encode_line(record.created, record.levelno, text, rank, self._route_id))


_SUBCLASSES: dict[type, type] = {}


def session_file_handler_class(cls: type[logging.FileHandler]) -> type[SessionFileHandler]:
    """The SessionFileHandler that is also a ``cls`` (one class per ``cls``, made once)."""
    if issubclass(cls, SessionFileHandler):
        return cls
    if cls is logging.FileHandler:
        return SessionFileHandler
    found = _SUBCLASSES.get(cls)
    if found is None:
        found = _SUBCLASSES[cls] = type(f"Session{cls.__name__}", (SessionFileHandler, cls), {
            "__module__": __name__,
            "__doc__": f"A SessionFileHandler that writes as a {cls.__name__} outside a session.",
        })
    return found


def session_file_handler(
    log_file: str | os.PathLike[str],
    rank: int,
    world_size: int,
    distributed: bool,
    mode: str,
    cfg: dict[str, Any] | None,
    level: int,
    delay: bool,
) -> SessionFileHandler | None:
    """The file handler of ``rank`` for MMLogger's arguments, or None when it writes no file.

    ``delay``: open no file now (inside a session the writer writes it).
    """
    handler = build_file_handler(
        log_file, rank, world_size, distributed, mode, cfg, level,
        subclass=session_file_handler_class, delay=delay,
    )
    if handler is None:
        return None
    assert isinstance(handler, SessionFileHandler)
    return handler.bind(make_route(log_file, distributed, world_size, mode, cfg, level), rank)


def ship_progress(session: Any, progress: Progress) -> bool:
    """Put a progress marker into this process's record ring (see ``report_progress``)."""
    return _put(session.shared, encode_progress(time.time(), progress))


def _put(shared: Any, data: tuple[Any, ...]) -> bool:
    """Put ``data`` into this process's record ring of session segments ``shared``."""
    return _put_into(_ring_of(shared), data)


def _ring_of(shared: Any) -> tuple[Any, Any]:
    """(this process's record producer, the doorbell) of session segments ``shared``."""
    return shared.record_producer(record_ring_bytes()), shared.doorbell


def _append_only(handler: logging.Handler) -> None:
    """Make ``handler``'s open file append at its end whatever its position (O_APPEND)."""
    stream = getattr(handler, "stream", None)
    try:
        fd = stream.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    except (AttributeError, OSError, ValueError):  # no file open (delay=True) or not a file
        pass


def wait_drained(session: Any, timeout: float, everyone: bool) -> bool:
    """Wait until the log writer committed what this process put so far (or everyone).

    Records put after the call do not count, so a process that keeps
    logging cannot keep it waiting.  Returns False when the writer did not
    get there within ``timeout``, or when no writer has been alive for a
    second (the caller may then write the records itself).
    """
    shared = session.shared
    if everyone:
        targets = [(c.consumed_in_ring, c.head()) for c in shared.record_consumers()]
    else:
        producer = shared.producer
        targets = [] if producer is None else [(producer.consumed, producer.position())]
    deadline = time.monotonic() + timeout
    writerless = None
    while True:
        targets = [(committed, end) for committed, end in targets if committed() < end]
        if not targets:
            return True
        now = time.monotonic()
        if now > deadline:
            return False
        pid, start = shared.log_writer()
        if is_alive(pid, start):
            writerless = None
        elif writerless is None:
            writerless = now
        elif now - writerless > 1.0:
            return False
        time.sleep(0.002)


_FORMATTER = logging.Formatter()

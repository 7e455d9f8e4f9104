"""MMEngine's log line layout, as a formatter that needs only the record.

Inside a session, records reach the process that writes them as plain data
(rebuilt with ``logging.makeLogRecord``), far from the logger that made them.
So the formatter reads nothing but record attributes, and whether to colour
is an argument rather than something it looks up on a handler or logger.
:class:`FileLines` makes the file layout's lines from fields alone, for the
process that logs and for the log writer alike.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "FILE_DATEFMT",
    "TERMINAL_DATEFMT",
    "DuplicateWarningFilter",
    "FileLines",
    "MMFormatter",
    "TerminalHandler",
    "formats_file_lines",
    "parse_level",
    "stream_supports_colour",
]

# Terminal lines omit the year, files keep it (as MMEngine does).
TERMINAL_DATEFMT = "%m/%d %H:%M:%S"
FILE_DATEFMT = "%Y/%m/%d %H:%M:%S"

_RESET = "\x1b[0m"
_UNDERLINE = "\x1b[4m"
_BLINK = "\x1b[5m"
# (lowest level, SGR colour): red, yellow, bright white, green.
_LEVEL_COLOURS = (
    (logging.ERROR, 31),
    (logging.WARNING, 33),
    (logging.INFO, 97),
)
_DEBUG_COLOUR = 32


def parse_level(value: int | str, argument: str = "log_level") -> int:
    """Turn a level number or registered level name into a number.

    Names are case-sensitive, as in ``logging``; the error names ``argument``
    so the caller's parameter shows up in the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(
            f"{argument}: expected an int or a level name such as 'INFO', "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{argument}: expected a level >= 0, got {value!r}")
        return value
    # getLevelName maps a registered name to its number (public since 3.4).
    number = logging.getLevelName(value)
    if isinstance(number, int):
        return number
    known = ", ".join(
        repr(logging.getLevelName(n))
        for n in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                  logging.CRITICAL)
    )
    raise ValueError(
        f"{argument}: unknown level name {value!r}; expected one of {known} "
        f"(upper case) or an int"
    )


def stream_supports_colour(stream: Any) -> bool:
    """Whether ANSI colour should be written to ``stream``.

    Follows the usual conventions (the same order termcolor uses):
    ANSI_COLORS_DISABLED or NO_COLOR switch colour off, FORCE_COLOR on,
    TERM=dumb off; otherwise colour only on a TTY.
    """
    env = os.environ
    if env.get("ANSI_COLORS_DISABLED") or env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


class MMFormatter(logging.Formatter):
    """``<time> - <logger> - <LEVEL> - <message>``; ERROR and above add
    ``<pathname> - <funcName> - <lineno> - `` before the message.

    Args:
        color: colour the level name (underlined; WARNING and ERROR blink).
        blink: make INFO and DEBUG blink too; needs ``color``.
        datefmt: ``strftime`` format of the time, terminal style by default.
    """

    def __init__(
        self,
        color: bool = True,
        blink: bool = False,
        datefmt: str | None = TERMINAL_DATEFMT,
    ) -> None:
        if blink and not color:
            raise ValueError("MMFormatter: blink=True needs color=True")
        super().__init__(fmt="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
                         datefmt=datefmt)
        self.color = bool(color)
        self.blink = bool(blink)

    def format(self, record: logging.LogRecord) -> str:
        return self.format_record(record, color=self.color)

    def format_record(self, record: logging.LogRecord, color: bool) -> str:
        """Format ``record``, colouring the level only if ``color``.

        Separate from :meth:`format` so one formatter can serve a stream that
        is sometimes a terminal and sometimes not, without shared state.
        """
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        level = self._level_text(record, color)
        if record.levelno >= logging.ERROR:
            text = (f"{record.asctime} - {record.name} - {level} - "
                    f"{record.pathname} - {record.funcName} - {record.lineno} - "
                    f"{record.message}")
        else:
            text = f"{record.asctime} - {record.name} - {level} - {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if not text.endswith("\n"):
                text += "\n"
            text += record.exc_text
        if record.stack_info:
            if not text.endswith("\n"):
                text += "\n"
            text += self.formatStack(record.stack_info)
        return text

    def _level_text(self, record: logging.LogRecord, color: bool) -> str:
        name = str(record.levelname)
        if not color:
            return name
        levelno = record.levelno
        code = _DEBUG_COLOUR
        for lowest, colour in _LEVEL_COLOURS:
            if levelno >= lowest:
                code = colour
                break
        blink = self.blink or levelno >= logging.WARNING
        return f"{_BLINK if blink else ''}{_UNDERLINE}\x1b[{code}m{name}{_RESET}"


class TerminalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that colours only when its current stream can show it.

    The decision is made per record because the stream can be swapped
    (``setStream``, pytest's capture) after the handler is built.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)

    def format(self, record: logging.LogRecord) -> str:
        formatter = self.formatter
        if isinstance(formatter, MMFormatter):
            colour = formatter.color and stream_supports_colour(self.stream)
            return formatter.format_record(record, color=colour)
        return super().format(record)


class DuplicateWarningFilter(logging.Filter):
    """Let each distinct WARNING message through once.

    Training loops repeat the same warning every iteration; one copy is
    enough.  Messages are compared after ``%`` formatting, so warnings that
    differ only in their arguments all show.  Other levels pass untouched.
    A message that cannot be made (an argument whose ``__str__`` raises)
    passes, so that the handler reports it with ``handleError`` as logging
    does for every level, instead of raising into the caller.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        try:
            key = record.getMessage()
        except Exception:  # noqa: BLE001 (any: the handler reports it, through handleError)
            return True
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class FileLines:
    """The lines of ``MMFormatter(color=False, datefmt=FILE_DATEFMT)``, made from fields.

    What a handler for MMEngine's file layout writes, without a LogRecord:
    the time text is made once a second (the one shared state, replaced
    whole, so threads never see half of it).
    """

    __slots__ = ("_converter", "_stamp")

    def __init__(self, converter: Callable[[float], time.struct_time] = time.localtime) -> None:
        self._converter = converter
        self._stamp = (-1, "")

    def asctime(self, created: float) -> str:
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (second, time.strftime(FILE_DATEFMT, self._converter(created)))
        return stamp[1]

    def plain(self, created: float, name: str, levelname: str, message: str) -> str:
        """The line (terminator included) of a record below ERROR with no traceback or stack."""
        return f"{self.asctime(created)} - {name} - {levelname} - {message}\n"


def formats_file_lines(handler: logging.Handler) -> bool:
    """Whether ``handler`` writes exactly the lines :class:`FileLines` makes.

    That is a handler made for MMEngine's file layout and left so: an
    uncoloured MMFormatter with the file date format, the one duplicate-warning
    filter, a newline terminator, and no rotation (a rotating handler must see
    each record to decide when to roll over).
    """
    formatter = handler.formatter
    filters = handler.filters
    return (
        type(formatter) is MMFormatter and not formatter.color
        and formatter.datefmt == FILE_DATEFMT
        and not isinstance(handler, logging.handlers.BaseRotatingHandler)
        and len(filters) == 1 and type(filters[0]) is DuplicateWarningFilter
        and getattr(handler, "terminator", None) == "\n"
    )

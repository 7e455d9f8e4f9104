"""MMLogger and print_log, with MMEngine's names, arguments and output.

MMLogger lives outside ``logging``'s logger tree: it is reached by instance
name through ManagerMixin, owns its handlers and never propagates, so a
third-party ``basicConfig`` or root handler neither hides nor duplicates its
lines.  Formatting and file layout live in :mod:`shmlog.format` so that they
can be reused where records are written on another process's behalf.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
from typing import Any

from ..format.files import (
    check_file_handler_cfg,
    check_file_mode,
    log_file_for_rank,
    master_log_file,
)
from ..format.formatter import (
    TERMINAL_DATEFMT,
    DuplicateWarningFilter,
    MMFormatter,
    TerminalHandler,
    parse_level,
)
from .manager import ManagerMixin
from .process import PROCESS, get_local_rank, get_rank, get_world_size
from .record_handler import session_file_handler

__all__ = ["MMLogger", "print_log"]


# -- this process, as MMLogger asks for it ------------------------------------------------
#
# MMLogger calls these by their module-level names when it is made, as
# MMEngine's does, so code (and tests) written for MMEngine that replace
# ``<logger module>._get_rank`` and the like see the effect.


def _get_rank() -> int:
    """This process's rank (the one identity rule of ``shmlog.api.process``)."""
    return get_rank()


def _get_world_size() -> int:
    """The number of processes of the job."""
    return get_world_size()


def _get_device_id() -> int | str:
    """The accelerator this process uses: LOCAL_RANK, through CUDA_VISIBLE_DEVICES.

    Without CUDA (or without torch imported) it is the local rank itself.  A
    device that CUDA_VISIBLE_DEVICES names by UUID or MIG id is returned as
    that string.
    """
    local_rank = get_local_rank()
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return local_rank
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = (visible.split(",") if visible is not None
               else [str(i) for i in range(torch.cuda.device_count())])
    if local_rank >= len(devices):
        return local_rank
    device = devices[local_rank].strip()
    try:
        return int(device)
    except ValueError:
        return device


def _get_host_info() -> str:
    """``user@host`` of this process, or '' when either cannot be found."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 (no user name in some containers)
        return ""


class MMLogger(logging.Logger, ManagerMixin):
    """A logger reached by instance name, printing MMEngine's log lines.

    Use :meth:`get_instance` (not ``logging.getLogger``) to create or fetch
    one.  The terminal handler writes to ``sys.stdout``; on ranks other than
    0 it shows ERROR and above only.  With ``log_file`` a file handler is
    added; see :mod:`shmlog.format.files` for which rank writes which file.

    Args:
        name: instance name for :meth:`get_instance`.
        logger_name: the ``name`` shown in each line (``logging.Logger.name``).
        log_file: path of the log file; ``work/run.log`` writes
            ``work/run/run.log`` (and ``work/run/run_rank<N>.log`` per rank
            when every rank writes its own file).
        log_level: threshold of the handlers, a number or a level name.
            DEBUG also makes every rank write its own file.
        file_mode: mode of the default FileHandler ('w' truncates, 'a'
            appends).
        distributed: every rank writes its own file, not only rank 0.
        file_handler_cfg: ``dict(type=<name in logging.handlers>, **kwargs)``
            to use e.g. a RotatingFileHandler instead of a FileHandler.
    """

    def __init__(
        self,
        name: str,
        logger_name: str = "mmengine",
        log_file: str | os.PathLike[str] | None = None,
        log_level: int | str = "INFO",
        file_mode: str = "w",
        distributed: bool = False,
        file_handler_cfg: dict[str, Any] | None = None,
    ) -> None:
        # Check everything before building anything: a bad argument must not
        # leave a directory, an open file or a half-made instance behind.
        if not isinstance(logger_name, str):
            raise TypeError(
                f"logger_name: expected a str, got {type(logger_name).__name__} "
                f"{logger_name!r}"
            )
        level = parse_level(log_level, "log_level")
        check_file_mode(file_mode)
        check_file_handler_cfg(file_handler_cfg)
        if not isinstance(distributed, (bool, int)):
            raise TypeError(
                f"distributed: expected a bool, got {type(distributed).__name__} "
                f"{distributed!r}"
            )
        if log_file is not None:
            master_log_file(log_file)  # refuses a path that is no file path, before any handler
        logging.Logger.__init__(self, logger_name)
        ManagerMixin.__init__(self, name)
        self.propagate = False

        rank = _get_rank()
        world_size = _get_world_size()
        self._rank = rank

        stream_handler = TerminalHandler(sys.stdout)
        stream_handler.setFormatter(MMFormatter(color=True, datefmt=TERMINAL_DATEFMT))
        stream_handler.setLevel(self._terminal_level(level))
        stream_handler.addFilter(DuplicateWarningFilter())
        self.handlers.append(stream_handler)
        self._own_handlers: list[logging.Handler] = [stream_handler]

        self._log_file: str | None = None
        if log_file is not None:
            session = PROCESS.current() if PROCESS.in_session() else None
            # A node without storage shared with the others writes <stem>_logs/.
            per_node = session is not None and not session.options.get("shared_storage", True)
            own = log_file_for_rank(
                log_file, rank, world_size, bool(distributed), level, per_node
            )
            shown = own if own is not None else master_log_file(log_file, per_node)
            self._log_file = os.path.abspath(shown)
            if own is not None:
                # Inside a session the designated log writer opens the files;
                # a process only opens its own when it logs outside one.
                file_handler = session_file_handler(
                    log_file, rank, world_size, bool(distributed), file_mode,
                    file_handler_cfg, level, delay=PROCESS.in_session(),
                )
                if file_handler is not None:
                    self.handlers.append(file_handler)
                    self._own_handlers.append(file_handler)

    @property
    def log_file(self) -> str | None:
        """The file this process writes (rank 0's file on ranks that write none)."""
        return self._log_file

    @classmethod
    def get_current_instance(cls) -> MMLogger:
        """The most recently created logger; creates 'mmengine' when there is none."""
        if not cls._instance_dict:
            cls.get_instance("mmengine")
        return super().get_current_instance()

    def callHandlers(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to this logger's own handlers only.

        No parent loggers and no ``logging.lastResort``: with no handler
        nothing is printed.
        """
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def setLevel(self, level: int | str) -> None:
        """Set the level of this logger and of the handlers it made.

        Handlers added later with ``addHandler`` keep their own level, and the
        terminal of a rank other than 0 stays at ERROR or above.  Every
        MMLogger's ``isEnabledFor`` cache is cleared: these loggers are not
        in ``logging``'s manager, whose own clearing never reaches them.
        """
        number = parse_level(level, "level")
        self.level = number
        for handler in self._own_handlers:
            if isinstance(handler, TerminalHandler):
                handler.setLevel(self._terminal_level(number))
            else:
                handler.setLevel(number)
        for logger in MMLogger.instances().values():
            logger._cache.clear()
        self._cache.clear()

    def _terminal_level(self, level: int) -> int:
        return level if self._rank == 0 else max(level, logging.ERROR)


def print_log(
    msg: Any,
    logger: logging.Logger | str | None = None,
    level: int | str = logging.INFO,
) -> None:
    """Print ``msg`` through a logger chosen by ``logger``.

    ``logger`` is one of: None (``print``), 'silent' (nothing), 'current'
    (the latest MMLogger), the instance name of an existing MMLogger, or a
    ``logging.Logger``.  ``level`` applies to the logger cases.  ERROR lines
    point at the caller of print_log, not at print_log itself.
    """
    if logger is None:
        print(msg)
        return
    if isinstance(logger, logging.Logger):
        target: logging.Logger = logger
    elif isinstance(logger, str):
        if logger == "silent":
            return
        if logger == "current":
            target = MMLogger.get_current_instance()
        else:
            found = MMLogger.instances().get(logger)
            if found is None:
                raise ValueError(
                    f"MMLogger: {logger!r} has not been created; create it with "
                    f"MMLogger.get_instance({logger!r}) or pass logger=None, 'silent', "
                    f"'current' or a logging.Logger"
                )
            target = found  # type: ignore[assignment]
    else:
        raise TypeError(
            f"print_log logger: expected None, 'silent', 'current', an MMLogger "
            f"instance name (str) or a logging.Logger, got {type(logger).__name__}"
        )
    target.log(parse_level(level, "level"), msg, stacklevel=2)

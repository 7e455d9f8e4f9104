"""Where log files go and how their handlers are built.

A distributed job writes several files; they live in a directory named after
the log file's stem (``work/tmp.log`` -> ``work/tmp/tmp.log``, rank N's own
file ``work/tmp/tmp_rankN.log``).  A log file that already sits in a
directory of its stem's name stays where it is: ``work/tmp/tmp.log`` is
written as given, with ``work/tmp/tmp_rankN.log`` beside it.  That is the
path MMEngine's Runner passes (``work_dir/<timestamp>/<timestamp>.log``), so
its logs land where MMEngine puts them.  All of it is decided by
:func:`build_file_handler` from plain values (path, rank, world size, flags,
mode, config), with no logger object involved, so the process that will write
files on behalf of a whole node can build exactly the handler each rank would
have built for itself.

In a directory other users can write to (group- or world-writable, or owned
by someone else: ``/tmp/x`` with mode 1777, say), anyone could put a symbolic
link where a log file will be opened and have this process overwrite the file
it points to.  There a log file is opened with O_NOFOLLOW (by every handler
class, rollovers included), and a linked log directory is refused: both raise
:class:`LogPathError` naming the path.  In the user's own directories links
are followed as usual.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import logging.handlers
import os
import stat
from collections.abc import Callable
from typing import Any, Union

from ..errors import LogPathError
from .formatter import FILE_DATEFMT, DuplicateWarningFilter, MMFormatter, parse_level

__all__ = [
    "FILE_MODES",
    "build_file_handler",
    "check_file_handler_cfg",
    "check_file_mode",
    "file_handler_classes",
    "log_file_for_rank",
    "master_log_file",
    "per_rank_files",
]

PathLike = Union[str, "os.PathLike[str]"]

# Text modes that can write; 'r' and binary modes would fail at the first record.
FILE_MODES = ("w", "a", "x", "w+", "a+", "x+")


def check_file_mode(mode: Any) -> str:
    """Return ``mode`` if a log file can be opened with it, else raise."""
    if not isinstance(mode, str):
        raise TypeError(
            f"file_mode: expected one of {list(FILE_MODES)}, got "
            f"{type(mode).__name__} {mode!r}"
        )
    if mode not in FILE_MODES:
        raise ValueError(
            f"file_mode: expected one of {list(FILE_MODES)} ('w' truncates, 'a' "
            f"appends), got {mode!r}"
        )
    return mode


def file_handler_classes() -> dict[str, type[logging.FileHandler]]:
    """The file handler classes ``file_handler_cfg['type']`` may name."""
    classes: dict[str, type[logging.FileHandler]] = {"FileHandler": logging.FileHandler}
    for attr in dir(logging.handlers):
        obj = getattr(logging.handlers, attr)
        if inspect.isclass(obj) and issubclass(obj, logging.FileHandler):
            # BaseRotatingHandler included, as in MMEngine: it builds, and only
            # fails at its first record (it cannot decide when to roll over).
            classes[attr] = obj
    return classes


def check_file_handler_cfg(
    cfg: dict[str, Any] | None,
) -> tuple[type[logging.FileHandler], dict[str, Any]]:
    """Resolve ``cfg`` to (handler class, keyword arguments without filename).

    ``None`` means a plain FileHandler.  The caller's dict is not modified.
    Arguments are checked against the class's signature here, before any
    directory is created or file opened.
    """
    if cfg is None:
        return logging.FileHandler, {}
    if not isinstance(cfg, dict):
        raise TypeError(
            f"file_handler_cfg: expected None or a dict such as "
            f"dict(type='RotatingFileHandler', maxBytes=..., backupCount=...), "
            f"got {type(cfg).__name__}"
        )
    classes = file_handler_classes()
    if "type" not in cfg:
        raise ValueError(
            f"file_handler_cfg {cfg!r}: needs a 'type' key naming one of {sorted(classes)}"
        )
    kwargs = dict(cfg)
    type_name = kwargs.pop("type")
    if not isinstance(type_name, str) or type_name not in classes:
        raise ValueError(
            f"file_handler_cfg type {type_name!r}: logging.handlers has no such file "
            f"handler; expected one of {sorted(classes)}"
        )
    if "filename" in kwargs:
        raise ValueError(
            f"file_handler_cfg {cfg!r}: 'filename' is not allowed; the file name "
            f"comes from log_file and the rank"
        )
    handler_cls = classes[type_name]
    try:
        inspect.signature(handler_cls).bind("log", **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"file_handler_cfg {cfg!r}: {type_name} does not accept these "
            f"arguments ({exc})"
        ) from None
    return handler_cls, kwargs


def per_rank_files(log_level: int | str, distributed: bool, world_size: int) -> bool:
    """Whether every rank writes its own file (not only rank 0).

    True with ``distributed`` or a DEBUG (or lower) level, and only when
    there is more than one process.
    """
    level = parse_level(log_level)
    return (bool(distributed) or level <= logging.DEBUG) and world_size > 1


def master_log_file(log_file: PathLike, per_node: bool = False) -> str:
    """Rank 0's file: ``dir/name.ext`` -> ``dir/name/name.ext``.

    ``dir/name/name.ext`` stays as it is (see the module docstring).
    ``per_node`` is the layout of a node without storage shared with the
    others: ``dir/name_logs/name.ext``.
    """
    directory, base = _split(log_file, per_node)
    return os.path.join(directory, base)


def log_file_for_rank(
    log_file: PathLike,
    rank: int,
    world_size: int,
    distributed: bool = False,
    log_level: int | str = logging.INFO,
    per_node: bool = False,
) -> str | None:
    """The file ``rank`` writes, or None when that rank writes no file."""
    if rank == 0:
        return master_log_file(log_file, per_node)
    if not per_rank_files(log_level, distributed, world_size):
        return None
    directory, base = _split(log_file, per_node)
    stem, suffix = os.path.splitext(base)
    return os.path.join(directory, f"{stem}_rank{rank}{suffix}")


def build_file_handler(
    log_file: PathLike,
    rank: int,
    world_size: int,
    distributed: bool = False,
    mode: str = "w",
    cfg: dict[str, Any] | None = None,
    log_level: int | str = logging.INFO,
    per_node: bool = False,
    *,
    subclass: Callable[[type[logging.FileHandler]], type[logging.FileHandler]] | None = None,
    delay: bool = False,
) -> logging.FileHandler | None:
    """The formatted, filtered file handler ``rank`` uses, or None if it writes none.

    ``mode`` applies to the default FileHandler; with ``cfg`` the handler's own
    arguments decide (TimedRotatingFileHandler takes no mode at all).  The
    file's directory is created when missing, unless ``delay`` (the file is
    then neither created nor opened until the handler writes a record).
    ``subclass`` maps the handler class to the class actually built (a
    subclass taking the same arguments).
    """
    check_file_mode(mode)
    handler_cls, kwargs = check_file_handler_cfg(cfg)
    level = parse_level(log_level)
    path = log_file_for_rank(log_file, rank, world_size, distributed, level, per_node)
    if path is None:
        return None
    directory = os.path.dirname(path) or "."
    _refuse_planted_links(directory)
    if not delay:
        os.makedirs(directory, exist_ok=True)
        _refuse_planted_links(directory)  # made meanwhile by someone else
    if _writable_by_others(directory):
        handler_cls = _no_follow(handler_cls)
    built = handler_cls if subclass is None else subclass(handler_cls)
    if cfg is None:
        handler: logging.FileHandler = built(path, mode, encoding="utf-8", delay=delay)
    else:
        if "encoding" in inspect.signature(handler_cls).parameters:
            kwargs.setdefault("encoding", "utf-8")
        if delay:
            kwargs["delay"] = True
        handler = built(path, **kwargs)
    handler.setFormatter(MMFormatter(color=False, datefmt=FILE_DATEFMT))
    handler.setLevel(level)
    handler.addFilter(DuplicateWarningFilter())
    return handler


def open_output(path: str, mode: str = "a") -> Any:
    """A text file beside the logs (an export), opened by the same rules as log files.

    Its directory is made when missing; where other users can write to it, a
    link is refused rather than followed.
    """
    directory = os.path.dirname(path) or "."
    _refuse_planted_links(directory)
    os.makedirs(directory, exist_ok=True)
    _refuse_planted_links(directory)
    opener = _open_no_follow if _writable_by_others(directory) else None
    return open(path, mode, encoding="utf-8", opener=opener)


def _split(log_file: PathLike, per_node: bool = False) -> tuple[str, str]:
    """(directory for the files, base name) of ``log_file``."""
    if not isinstance(log_file, (str, os.PathLike)):
        raise TypeError(
            f"log_file: expected a str or os.PathLike file path, got "
            f"{type(log_file).__name__} {log_file!r}"
        )
    path = os.fspath(log_file)
    if not isinstance(path, str):
        raise TypeError(f"log_file: expected a text path, got {path!r}")
    parent, base = os.path.split(path)
    if not base or base in (".", ".."):
        raise ValueError(f"log_file: expected a file path such as 'work/run.log', got {path!r}")
    stem = os.path.splitext(base)[0]
    if per_node:
        return os.path.join(parent, f"{stem}_logs"), base
    if os.path.basename(os.path.normpath(parent)) == stem and parent not in ("", "."):
        return parent, base  # already in a directory of its own name
    return os.path.join(parent, stem), base


def _writable_by_others(directory: str) -> bool:
    """Whether users other than this one can create or replace entries in ``directory``."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    owner_is_trusted = info.st_uid in (os.getuid(), 0)
    return not owner_is_trusted or bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _describe_dir(directory: str) -> str:
    info = os.stat(directory)
    return f"{directory} (mode {stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid})"


def _refuse_planted_links(directory: str) -> None:
    """Refuse ``directory`` when one of its components is a link in a directory others can write."""
    path = os.path.abspath(directory)
    parts = path.split(os.sep)[1:]
    current = os.sep
    for part in parts:
        parent, current = current, os.path.join(current, part)
        if os.path.islink(current) and _writable_by_others(parent):
            raise LogPathError(
                f"log directory {path}: {current} is a symbolic link (to "
                f"{os.readlink(current)!r}) in {_describe_dir(parent)}, which other users "
                f"can write to; shmlog does not follow a link it did not create there. "
                f"Remove the link, or log to a directory only you can write to."
            )


def _open_no_follow(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        directory = os.path.dirname(path)
        raise LogPathError(
            f"log file {path}: is a symbolic link (to {os.readlink(path)!r}) in "
            f"{_describe_dir(directory)}, which other users can write to; shmlog does not "
            f"follow a link it did not create there. Remove the link, or log to a "
            f"directory only you can write to."
        ) from None


@functools.cache
def _no_follow(handler_cls: type[logging.FileHandler]) -> type[logging.FileHandler]:
    """``handler_cls`` opening its file (at first and at every rollover) with O_NOFOLLOW."""

    def _open(self: logging.FileHandler) -> Any:
        return open(
            self.baseFilename, self.mode, encoding=self.encoding,
            errors=getattr(self, "errors", None), opener=_open_no_follow,
        )

    return type(handler_cls.__name__, (handler_cls,), {"_open": _open, "__module__": __name__})

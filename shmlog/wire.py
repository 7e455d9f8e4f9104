"""Every cross-process format that is not a binary layout, in one place.

The binary layouts (segments, rings, info slots, record rings) are documented
in the ``shmlog.shm`` module that owns each.  What travels *inside* them is
defined here, and nowhere else:

* how a MessageHub's name and a key make one shared name (:func:`hub_key`);
* the runtime-info keys shmlog reserves for itself;
* the log record, its route and the progress marker that processes put into
  their record rings.  They are NamedTuples so that code reads fields by
  name, and cross as plain tuples (``marshal`` takes nothing else), rebuilt
  with ``_make`` on the reading side.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# -- names in a session ------------------------------------------------------------

# Joins a hub name and a key: scalar ``key`` of hub ``hub`` lives in rings named
# ``hub + SEPARATOR + key``, and its runtime info in the slot of that name.
# The ASCII unit separator never appears in a printable name.
SEPARATOR = "\x1f"


def hub_key(hub: str, key: str) -> str:
    """The session-wide name of ``key`` of MessageHub ``hub``."""
    return hub + SEPARATOR + key


def split_hub_key(full: str) -> tuple[str, str]:
    """``(hub, key)`` of a session-wide name; ``('', full)`` for a name of no hub."""
    hub, sep, key = full.partition(SEPARATOR)
    return (hub, key) if sep else ("", full)


def hub_prefix(hub: str) -> str:
    """What every session-wide name of hub ``hub`` starts with."""
    return hub + SEPARATOR


# -- reserved runtime info -----------------------------------------------------------

# The progress dict :func:`shmlog.report_progress` stores in its hub at every
# logging step (fields: :class:`Progress`).
PROGRESS_KEY = "progress"
# Runtime info keys (of any hub) that describe where the training loop is.
PROGRESS_INFO_KEYS = ("iter", "max_iters", "epoch", "max_epochs", "eta")
# Session-level info (no hub): the log files some writer of the session has
# opened, so that a successor appends to them instead of truncating them.
OPENED_FILES_KEY = SEPARATOR + "shmlog" + SEPARATOR + "opened-files"


# -- log records ---------------------------------------------------------------------


class Route(NamedTuple):
    """Where a log record goes: what the writer needs to build the file handler."""

    log_file: str  # absolute path given to MMLogger
    distributed: bool
    world_size: int
    mode: str  # file mode of the default FileHandler
    handler_cfg: str | None  # ``file_handler_cfg`` as JSON, None for a FileHandler
    level: int


class LogRecordData(NamedTuple):
    """A ``logging.LogRecord`` reduced to plain data in the process that logged it.

    The message is already formatted and the traceback already rendered, as
    ``logging.handlers.QueueHandler.prepare`` does.
    """

    created: float
    levelno: int
    levelname: str
    name: str
    message: str
    pathname: str
    func: str | None
    lineno: int
    exc_text: str | None
    stack_info: str | None
    rank: int
    worker: int  # DataLoader worker id, -1 outside workers
    pid: int
    route: tuple  # a Route, as a plain tuple


class Progress(NamedTuple):
    """Where the training loop is at one logging step (``shmlog.report_progress``)."""

    mode: str  # 'train', 'val' or 'test'
    batch_idx: int
    iter: int
    epoch: int
    dataloader_len: int | None
    max_iters: int | None
    max_epochs: int | None
    event: str  # 'iter' or 'epoch_end'
    at_ns: int  # CLOCK_MONOTONIC time of the step: lines show the scalars as of then

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        """A Progress from the dict stored as runtime info (missing fields: defaults)."""
        return cls(
            mode=data.get("mode", "train"), batch_idx=int(data.get("batch_idx", 0)),
            iter=int(data.get("iter", 0)), epoch=int(data.get("epoch", 0)),
            dataloader_len=data.get("dataloader_len"), max_iters=data.get("max_iters"),
            max_epochs=data.get("max_epochs"), event=data.get("event", "iter"),
            at_ns=data.get("at_ns"),
        )


class ProgressMarker(NamedTuple):
    """A record ring entry that asks the writer for MMEngine's line at one step."""

    created: float
    kind: None  # None here, a level number in LogRecordData: how the two are told apart
    progress: tuple  # a Progress, as a plain tuple


def is_progress_marker(data: tuple) -> bool:
    """Whether a tuple read from a record ring is a :class:`ProgressMarker`."""
    return data[1] is None


__all__ = [
    "OPENED_FILES_KEY",
    "PROGRESS_INFO_KEYS",
    "PROGRESS_KEY",
    "SEPARATOR",
    "LogRecordData",
    "Progress",
    "ProgressMarker",
    "Route",
    "hub_key",
    "hub_prefix",
    "is_progress_marker",
    "split_hub_key",
]

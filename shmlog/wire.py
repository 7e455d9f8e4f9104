"""Every cross-process format that is not a binary layout, in one place.

The binary layouts (segments, rings, info slots, record rings) are documented
in the ``shmlog.shm`` module that owns each.  What travels *inside* them is
defined here, and nowhere else:

* how a MessageHub's name and a key make one shared name (:func:`hub_key`);
* the runtime-info keys shmlog reserves for itself;
* the entries processes put into their record rings, and their one codec:
  a log record as fields (:class:`LogRecordData`), as the line already made
  (:class:`LogLine`), or a progress marker (:class:`ProgressMarker`).  Each
  crosses as a plain tuple (``marshal`` takes nothing else) that starts with
  the time it was made (``time.time()``, at index ``CREATED``: what the log
  writer merges rings by) and its kind's tag (``RECORD``, ``LINE``,
  ``PROGRESS``); ``encode_*`` make
  them in the producing process and :func:`decode_entry` checks the tag and the
  field count and returns the NamedTuple, whose fields the log writer and its
  sinks read by name.  No other module indexes or measures an entry.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

import hashlib
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
# Session-level info (no hub): the log writer's commits, stored in turn under
# the two keys so that one is always whole (see ``shmlog.writer.commit``).
COMMIT_KEYS = (
    SEPARATOR + "shmlog" + SEPARATOR + "commit-0",
    SEPARATOR + "shmlog" + SEPARATOR + "commit-1",
)

# Session-level info: where the log writer serves metrics (``shmlog.init(metrics_port=...)``),
# ``{"url", "host", "port", "pid", "start"}``; absent while no writer serves them.
METRICS_KEY = SEPARATOR + "shmlog" + SEPARATOR + "metrics"


class Commit(NamedTuple):
    """What the log writer has written for good: a successor continues from here.

    Crosses as a dict (runtime info holds plain data): ``{"seq": ..., "files":
    {path: [inode, length]}, "rings": {ring ident: [consumed, reported]}}``.
    """

    seq: int
    files: dict[str, tuple[int, int]]
    rings: dict[str, tuple[int, int]]

    def as_data(self) -> dict[str, Any]:
        return {"seq": self.seq, "files": {p: list(v) for p, v in self.files.items()},
                "rings": {r: list(v) for r, v in self.rings.items()}}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Commit:
        return cls(int(data["seq"]),
                   {p: (int(v[0]), int(v[1])) for p, v in data["files"].items()},
                   {r: (int(v[0]), int(v[1])) for r, v in data["rings"].items()})


# Session-level info: the routes log records name by id (see LogRecordData).
ROUTE_KEY_PREFIX = SEPARATOR + "shmlog" + SEPARATOR + "route" + SEPARATOR


def route_id(route: tuple) -> str:
    """A short name for a route, the same in every process (a digest of its fields)."""
    return hashlib.blake2b(repr(tuple(route)).encode(), digest_size=8).hexdigest()


def route_key(ident: str) -> str:
    """The runtime-info key a route is stored under, by its :func:`route_id`."""
    return ROUTE_KEY_PREFIX + ident


# Runtime info of a hub, process-local or the writer's view of a step: the
# job-wide statistics LogProcessor shows for ``reduce`` entries, as
# {"step": Progress.step() as a list, "values": {log_name: value}, "workers": {...}};
# in the writer's view also COMPUTED_INFO: {log_name: value} of the step's
# registered statistics (``Progress.computed``).
REDUCED_INFO_KEY = "shmlog/reduced"
COMPUTED_INFO = "computed"
# Session-level info: each rank's share of a step's job-wide statistics, by
# local rank, which the node's local rank 0 combines (``shmlog.api.reduce``).
REDUCE_PART_PREFIX = SEPARATOR + "shmlog" + SEPARATOR + "reduce" + SEPARATOR


# -- log records ---------------------------------------------------------------------

# Every record ring entry starts (created, tag): the time it was made, and which
# NamedTuple it is.
CREATED, TAG = 0, 1
RECORD, LINE, PROGRESS = 1, 2, 3


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
    tag: int  # RECORD
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
    route: str  # route_id of its Route, stored in runtime info before the record is put


class LogLine(NamedTuple):
    """A record whose process made the line itself: one below WARNING, with no
    traceback or stack, for a handler of MMEngine's file layout
    (``shmlog.format.formatter.formats_file_lines``).

    The writer appends ``text`` as it is, so a record costs it no formatting.
    """

    created: float
    tag: int  # LINE
    levelno: int
    text: str  # the whole line, ``[worker<id>]`` mark and terminator included
    rank: int
    route: str  # as in LogRecordData


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
    # Job-wide statistics of the step (``reduce`` entries of the LogProcessor
    # config, exchanged by every rank): {"values": {log_name: value},
    # "workers": {label: value}}, or None.
    reduced: dict | None = None
    # Values of the step's statistics registered with
    # HistoryBuffer.register_statistics, computed by the logging process for a
    # log writer that may not know them (``shmlog.format.registered``):
    # {log_name: plain value}, or None.
    computed: dict | None = None

    def step(self) -> tuple:
        """What identifies the logging step (for job-wide statistics)."""
        return (self.mode, self.event, self.iter, self.batch_idx)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        """A Progress from the dict stored as runtime info (missing fields: defaults)."""
        return cls(
            mode=data.get("mode", "train"), batch_idx=int(data.get("batch_idx", 0)),
            iter=int(data.get("iter", 0)), epoch=int(data.get("epoch", 0)),
            dataloader_len=data.get("dataloader_len"), max_iters=data.get("max_iters"),
            max_epochs=data.get("max_epochs"), event=data.get("event", "iter"),
            at_ns=data.get("at_ns"), reduced=data.get("reduced"), computed=data.get("computed"),
        )


class ProgressMarker(NamedTuple):
    """A record ring entry that asks the writer for MMEngine's line at one step."""

    created: float
    tag: int  # PROGRESS
    progress: tuple  # a Progress, as a plain tuple


def encode_record(
    created: float, levelno: int, levelname: str, name: str, message: str, pathname: str,
    func: str | None, lineno: int, exc_text: str | None, stack_info: str | None, rank: int,
    worker: int, pid: int, route: str,
) -> tuple:
    """A :class:`LogRecordData` as the plain tuple it crosses as."""
    return (created, RECORD, levelno, levelname, name, message, pathname, func, lineno,
            exc_text, stack_info, rank, worker, pid, route)


def encode_line(created: float, levelno: int, text: str, rank: int, route: str) -> tuple:
    """A :class:`LogLine` as the plain tuple it crosses as."""
    return (created, LINE, levelno, text, rank, route)


def encode_progress(created: float, progress: Progress) -> tuple:
    """A :class:`ProgressMarker` for ``progress`` as the plain tuple it crosses as
    (its job-wide and computed statistics included)."""
    return (created, PROGRESS, tuple(progress))


_KINDS: dict[Any, type] = {RECORD: LogRecordData, LINE: LogLine, PROGRESS: ProgressMarker}
_SIZES = {tag: len(kind._fields) for tag, kind in _KINDS.items()}
_new = tuple.__new__


def decode_entry(data: Any) -> LogRecordData | LogLine | ProgressMarker:
    """The entry read from a record ring, as its NamedTuple; ValueError for anything else.

    Only the tag and the number of fields are checked (the writer's hot path);
    a field of the wrong type fails where it is used.
    """
    if type(data) is tuple and len(data) > TAG:
        tag = data[TAG]
        if type(tag) is int and _SIZES.get(tag) == len(data):
            return _new(_KINDS[tag], data)
    raise ValueError(f"not a record ring entry: {entry_shape(data)}")


def entry_shape(data: Any) -> str:
    """What an entry that is not a record looks like, for messages."""
    if not isinstance(data, tuple):
        return type(data).__name__
    tag = data[TAG] if len(data) > TAG else None
    kind = _KINDS.get(tag) if type(tag) is int else None
    named = f"tag {tag!r}" if kind is None else f"a {kind.__name__}'s tag"
    return f"{len(data)} fields, {named}"


__all__ = [
    "COMMIT_KEYS",
    "COMPUTED_INFO",
    "CREATED",
    "LINE",
    "METRICS_KEY",
    "PROGRESS_INFO_KEYS",
    "PROGRESS",
    "PROGRESS_KEY",
    "REDUCED_INFO_KEY",
    "RECORD",
    "REDUCE_PART_PREFIX",
    "ROUTE_KEY_PREFIX",
    "SEPARATOR",
    "TAG",
    "Commit",
    "LogLine",
    "LogRecordData",
    "Progress",
    "ProgressMarker",
    "Route",
    "hub_key",
    "hub_prefix",
    "decode_entry",
    "encode_line",
    "encode_progress",
    "encode_record",
    "entry_shape",
    "route_id",
    "route_key",
    "split_hub_key",
]

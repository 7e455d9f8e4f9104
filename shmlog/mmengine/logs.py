"""The Runner's log files, written by the session's designated writer.

MMEngine's Runner builds its MMLogger (MMEngine's class) with
``work_dir/<timestamp>/<timestamp>.log`` and opens that file itself.  While
the session is open, :func:`route_to_session` puts a shmlog file handler in
place of each of the logger's file handlers: records then go to the
session's log writer, which appends them to the same file (a log file
already in a directory of its stem's name stays there,
``shmlog.format.files``), together with those of the rank's DataLoader
workers.  Rank N's own file, when it writes one (``log_level='DEBUG'``), is
``<timestamp>_rankN.log`` beside it.  :func:`restore` puts MMEngine's
handlers back, which then append to the files again.

The shmlog handlers keep the file open in append mode, as MMEngine's did:
MMEngine writes some text (the model's initialisation report) straight into
the ``stream`` of the logger's file handlers, bypassing logging, and that
text is appended by this process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..api.record_handler import SessionFileHandler, session_file_handler

Swaps = list[tuple[logging.Handler, logging.Handler]]  # (shmlog's, MMEngine's)


def route_to_session(logger: logging.Logger, log_dir: str, timestamp: str, rank: int,
                     world_size: int) -> Swaps:
    """Replace the file handlers of the Runner's ``logger``; returns what :func:`restore` needs."""
    master = os.path.join(log_dir, f"{timestamp}.log")
    swaps: Swaps = []
    for index, handler in enumerate(list(logger.handlers)):
        if not isinstance(handler, logging.FileHandler) or isinstance(handler, SessionFileHandler):
            continue
        ours = session_file_handler(
            master, rank, world_size, distributed=rank != 0, mode="a", cfg=None,
            level=handler.level, delay=False,
        )
        if ours is None:
            continue
        handler.flush()
        handler.close()  # reopened by restore(), in its append mode
        logger.handlers[index] = ours
        swaps.append((ours, handler))
    return swaps


def restore(logger: logging.Logger, swaps: Swaps) -> None:
    """Put MMEngine's file handlers back where :func:`route_to_session` took them."""
    for ours, theirs in swaps:
        if isinstance(theirs, logging.FileHandler) and theirs.mode.startswith("w"):
            theirs.mode = "a"  # a closed 'w' handler would never reopen, nor may it truncate
        if ours in logger.handlers:
            logger.handlers[logger.handlers.index(ours)] = theirs
        ours.close()


def runner_rank(runner: Any) -> tuple[int, int]:
    """(rank, world size) of the Runner's process."""
    return int(getattr(runner, "rank", 0)), int(getattr(runner, "world_size", 1))

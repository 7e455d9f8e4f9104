"""``shmlog serve``: a session's metrics on ``/metrics`` for Prometheus, from a terminal.

The endpoint is ``shmlog.writer.metrics.Endpoint``, the same one the log
writer runs with ``metrics_port``, here in a process of its own that only
reads the session.  It serves until the session goes away (closed, or every
process that joined it exited) or it is stopped with SIGINT or SIGTERM, and
exits with status 0 in each case; 1 when it cannot start.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, TextIO

from ..errors import MetricsUnavailable, SessionError
from ..format.exposition import DEFAULT_HOST
from ..writer.metrics import Endpoint
from .watch import choose_session

# How often the session's state is looked at between scrapes.
CHECK_SECONDS = 0.25


def run(session: str | None = None, *, host: str = DEFAULT_HOST, port: int = 0,
        out: TextIO | None = None, err: TextIO | None = None,
        ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """``shmlog serve``; returns the exit status.

    Prints the endpoint's URL on ``out`` once it listens.  ``stop`` (set by
    SIGINT and SIGTERM when this runs in the main thread) ends it; ``ready``
    is set once the URL is printed.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stop = threading.Event() if stop is None else stop
    previous = _stop_on_signals(stop)
    try:
        endpoint = Endpoint.open(choose_session(session, "serve"), host, port)
    except (SessionError, MetricsUnavailable, ValueError, TypeError) as exc:
        _restore(previous)
        err.write(f"shmlog serve: {exc}\n")
        return 1
    except OSError as exc:
        _restore(previous)
        err.write(f"shmlog serve: cannot listen on {host}:{port}: {exc}\n")
        return 1
    try:
        out.write(f"shmlog serve: session {endpoint.session} on {endpoint.url}\n")
        out.flush()
        if ready is not None:
            ready.set()
        gone = None
        while gone is None and not stop.wait(CHECK_SECONDS):
            gone = endpoint.problem()
    finally:
        endpoint.close()
        _restore(previous)
    if gone is not None:
        err.write(f"shmlog serve: {gone}\n")
    return 0


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """Make SIGINT and SIGTERM set ``stop``; the handlers they had, to restore."""
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)

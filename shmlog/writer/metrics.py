"""The metrics endpoint: a session on ``/metrics`` over HTTP, read-only.

An :class:`Endpoint` is prometheus_client's HTTP server (one thread per
request) over a private registry holding one collector
(``shmlog.format.exposition``), which samples the session through a
read-only attach of its own: the endpoint is never a member, never claims a
slot and never stores into the session, and a scrape reads rings
without the training processes noticing.  The text format is served, and
OpenMetrics to a client whose ``Accept`` header asks for it.

``shmlog serve`` runs one from a terminal.  With ``shmlog.init(metrics_port=N)``
the log writer runs one (:class:`WriterEndpoint`) for as long as it writes:
whichever process holds the writer lock serves, so on a takeover the
endpoint moves with the writing to the successor, which binds the same port
(a new one for port 0) and publishes its address in the session's runtime
info (``wire.METRICS_KEY``) for ``shmlog ls`` and ``Session.metrics_url``.
A writer that cannot bind says so once on stderr and tries again every
second: its log writing never waits for it.

A forked child inherits the listening socket of an endpoint running in its
parent (a member writing the logs forks DataLoader workers): the child's
copy is closed at once (:func:`after_fork_in_child`), so that the port is
free when the parent stops serving and no connection waits on a process
that never answers.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from .. import forks
from ..errors import SessionError
from ..format.exposition import (
    DEFAULT_HOST,
    MetricsUnavailable,
    SessionCollector,
    check_host,
    check_port,
    require_prometheus,
)
from ..shm import codec
from ..shm.liveness import process_start
from ..shm.session import SessionSegments
from ..wire import METRICS_KEY

RETRY_SECONDS = 1.0

__all__ = [
    "DEFAULT_HOST",
    "Endpoint",
    "MetricsUnavailable",
    "WriterEndpoint",
    "after_fork_in_child",
    "url_of",
]

# Endpoints serving in this process, for the fork hook.
_live: set[Endpoint] = set()


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


class Endpoint:
    """An HTTP server answering scrapes with a sample of one session."""

    def __init__(self, collector: SessionCollector, server: Any, thread: threading.Thread,
                 host: str) -> None:
        self._collector = collector
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_port
        self.url = url_of(host, self.port)
        self._pid = os.getpid()
        self._closed = False
        _live.add(self)

    @classmethod
    def open(cls, session: str, host: str = DEFAULT_HOST, port: int = 0, *,
             require_members: bool = True) -> Endpoint:
        """Serve ``session`` on ``host``:``port`` (0: any free port; see :attr:`port`).

        Raises MetricsUnavailable without prometheus_client, SessionError when
        the session cannot be read, OSError when the address cannot be bound.
        """
        check_host(host)
        check_port(port)
        prometheus = require_prometheus()
        collector = SessionCollector.open(session, require_members)
        try:
            registry = prometheus.CollectorRegistry(auto_describe=False)
            registry.register(collector)
            server, thread = prometheus.start_http_server(port, addr=host, registry=registry)
            _deepen_backlog(server)
        except BaseException:
            collector.close()
            raise
        return cls(collector, server, thread, host)

    @property
    def session(self) -> str:
        return self._collector.session

    def problem(self) -> str | None:
        """Why the session is gone (closed, or its processes exited), or None."""
        return self._collector.problem()

    def close(self) -> None:
        """Stop answering, release the port, then let go of the session."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        if self._pid == os.getpid():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._collector.close()

    def __enter__(self) -> Endpoint:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Connections the kernel queues for the endpoint until its thread accepts them.
# socketserver's default of 5 drops the SYNs of most of 100 scrapers arriving
# together, which then wait for a retransmission (1 s, then 3, 7, ...).
LISTEN_BACKLOG = 1024


def _deepen_backlog(server: Any) -> None:
    """Give ``server``'s listening socket a queue of ``LISTEN_BACKLOG`` connections
    (``listen`` again on a listening socket changes its backlog; the kernel caps it
    at net.core.somaxconn)."""
    server.socket.listen(LISTEN_BACKLOG)


def after_fork_in_child() -> None:
    """Close a forked child's copies of the listening sockets (see the module docstring)."""
    for endpoint in list(_live):
        try:
            endpoint._server.socket.close()
        except OSError:
            pass
    _live.clear()


forks.on_fork(after_fork_in_child)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class WriterEndpoint:
    """The log writer's endpoint, for as long as it writes; published in runtime info.

    Binding happens in a thread of its own, so the writer starts writing at
    once whatever the endpoint's fate.
    """

    def __init__(self, segments: SessionSegments, host: str, port: int) -> None:
        self._segments = segments
        self._host = host
        self._port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.endpoint: Endpoint | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"shmlog-metrics-{segments.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        name, where = self._segments.name, f"{self._host}:{self._port}"
        failed = None
        while not self._stop.is_set():
            try:
                endpoint = Endpoint.open(name, self._host, self._port, require_members=False)
            except MetricsUnavailable as exc:
                _say(f"shmlog: session {name!r} serves no metrics: {exc}")
                return
            except SessionError:
                return  # the session is closing: nothing to serve
            except OSError as exc:
                if failed != str(exc):
                    _say(f"shmlog: session {name!r} cannot serve metrics on {where}: {exc}; "
                         f"trying again every {RETRY_SECONDS:g} s")
                    failed = str(exc)
                self._stop.wait(RETRY_SECONDS)
                continue
            with self._lock:
                if self._stop.is_set():
                    endpoint.close()
                    return
                self.endpoint = endpoint
            self._publish(endpoint)
            if failed is not None:
                _say(f"shmlog: session {name!r} serves metrics on {endpoint.url}")
            return

    def _publish(self, endpoint: Endpoint) -> None:
        pid = os.getpid()
        data = {"url": endpoint.url, "host": endpoint.host, "port": endpoint.port,
                "pid": pid, "start": process_start(pid) or 0}
        try:
            self._segments.info_set(METRICS_KEY, codec.encode(METRICS_KEY, data))
        except (SessionError, ValueError, OSError):
            pass  # closing meanwhile

    def close(self) -> None:
        """Stop serving and withdraw the address (before the writer lock is released)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            endpoint, self.endpoint = self.endpoint, None
        if endpoint is None:
            return
        try:
            self._segments.info_set(METRICS_KEY, None)
        except (SessionError, ValueError, OSError):
            pass
        endpoint.close()

"""A session's scalars, progress and health as Prometheus metrics.

Metric names are fixed and MessageHub keys go into labels: a key such as
``train/loss`` is no metric name, two keys may differ only where a metric
name cannot, and a dashboard written for one run works for every run.  Each
(hub, key, writer) is one series of every ``shmlog_scalar_*`` metric, with
the writer's label (``rank0``, ``rank0/worker1``) as ``writer``; a key's
statistic over every writer is an aggregation in the query
(``sum by (hub, key)`` of the sums and update counts, ``min by``/``max by``).

The numbers are a :class:`shmlog.format.sample.Sampler`'s: read from the
session's shared memory at each scrape, which only reads rings.  Values
that may be negative or NaN are gauges; only counts that never decrease are
counters (an OpenMetrics reader refuses a NaN or negative counter).

``prometheus_client`` is imported when a collector is made, never by
``import shmlog``; without it :func:`require_prometheus` raises
:class:`MetricsUnavailable`, which names the extra to install.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from numbers import Real
from typing import Any

from ..errors import MetricsUnavailable, SessionGone
from ..shm import codec
from ..shm.liveness import is_alive
from ..wire import METRICS_KEY
from .sample import Sample, Sampler

METRICS_MISSING = (
    "the metrics endpoint needs prometheus_client, which is not installed: "
    "pip install 'shmlog[metrics]'"
)
DEFAULT_HOST = "127.0.0.1"

SCALAR = ("hub", "key", "writer")
HUB = ("hub",)
WRITER = ("writer",)

# name as queried -> (type, labels, help).  Counters are queried with their
# ``_total``; the info metric with its ``_info``.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "shmlog_scalar_current": (
        "gauge", SCALAR, "Newest value one writer logged for a MessageHub scalar."),
    "shmlog_scalar_updates_total": (
        "counter", SCALAR, "Updates one writer made to a MessageHub scalar, since it began."),
    "shmlog_scalar_value_sum": (
        "gauge", SCALAR, "Sum of every value one writer logged for a MessageHub scalar."),
    "shmlog_scalar_count_sum": (
        "gauge", SCALAR,
        "Sum of the counts of those updates; value_sum over count_sum is HistoryBuffer's mean."),
    "shmlog_scalar_min": (
        "gauge", SCALAR, "Smallest value one writer logged for a MessageHub scalar."),
    "shmlog_scalar_max": (
        "gauge", SCALAR, "Largest value one writer logged for a MessageHub scalar."),
    "shmlog_scalar_last_update_timestamp_seconds": (
        "gauge", SCALAR, "Unix time of one writer's newest update of a MessageHub scalar."),
    "shmlog_progress_iter": ("gauge", HUB, "Training iteration, from the hub's runtime info."),
    "shmlog_progress_max_iters": ("gauge", HUB, "Iterations the run will make."),
    "shmlog_progress_epoch": ("gauge", HUB, "Training epoch, from the hub's runtime info."),
    "shmlog_progress_max_epochs": ("gauge", HUB, "Epochs the run will make."),
    "shmlog_progress_eta_seconds": ("gauge", HUB, "Seconds the run has left, as the log shows it."),
    "shmlog_job_worker_data_time_seconds": (
        "gauge", ("hub", "worker"),
        "Window mean of a DataLoader worker's data time, for every node's workers: on rank 0's "
        "node, when the LogProcessor config has reduce entries (worker: node<N>/rank<r>/worker<w>)."),
    "shmlog_session_info": (
        "info", ("session",), "The shmlog session these metrics are read from."),
    "shmlog_session_members": ("gauge", (), "Live processes that joined the session."),
    "shmlog_session_writers": (
        "gauge", (), "Writer slots in the session: writing threads, alive or exited."),
    "shmlog_session_writers_alive": ("gauge", (), "Writing threads still running."),
    "shmlog_writer_alive": ("gauge", WRITER, "1 while this writer's thread runs, else 0."),
    "shmlog_log_records_dropped_total": (
        "counter", WRITER, "Log records a process dropped because its record ring stayed full."),
    "shmlog_log_backlog_bytes": (
        "gauge", WRITER, "Bytes of log records a process put that the log writer has not written."),
    "shmlog_read_duration_seconds": (
        "gauge", (), "Seconds this scrape took to read the session's shared memory."),
}

_PROGRESS = (
    ("iter", "shmlog_progress_iter"),
    ("max_iters", "shmlog_progress_max_iters"),
    ("epoch", "shmlog_progress_epoch"),
    ("max_epochs", "shmlog_progress_max_epochs"),
    ("eta", "shmlog_progress_eta_seconds"),
)


def metrics_url(info_get: Callable[[str], bytes | None]) -> str | None:
    """The URL the log writer serves metrics on, read with ``info_get``; None when none does.

    An address whose process exited (a writer killed before its successor
    published its own) is no endpoint.
    """
    try:
        raw = info_get(METRICS_KEY)
        data = None if raw is None else codec.decode(raw)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    pid, start, url = data.get("pid"), data.get("start"), data.get("url")
    if not isinstance(url, str) or not isinstance(pid, int) or not isinstance(start, int):
        return None
    return url if is_alive(pid, start) else None


def require_prometheus() -> Any:
    """The ``prometheus_client`` module, or MetricsUnavailable naming the extra."""
    try:
        import prometheus_client
        import prometheus_client.core  # the metric families
    except ImportError as exc:
        raise MetricsUnavailable(METRICS_MISSING) from exc
    return prometheus_client


def check_port(port: Any, what: str = "port") -> int:
    """``port`` if a TCP port to listen on (0: any free one), else ValueError naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{what}: expected an int from 0 to 65535 (0: any free port), got {port!r}")
    return port


def check_host(host: Any, what: str = "host") -> str:
    """``host`` if an address or host name to listen on, else TypeError/ValueError naming it."""
    if not isinstance(host, str):
        raise TypeError(f"{what}: expected a str (an address or host name), got {type(host).__name__}")
    if not host or host != host.strip():
        raise ValueError(f"{what}: expected an address or host name, got {host!r}")
    return host


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def _empty() -> dict[str, Any]:
    """Every metric of :data:`METRICS`, without samples, by the name it is queried by."""
    core = require_prometheus().core
    made: dict[str, Any] = {}
    for name, (kind, labels, text) in METRICS.items():
        if kind == "gauge":
            made[name] = core.GaugeMetricFamily(name, text, labels=list(labels))
        elif kind == "counter":  # the family's name drops the ``_total``
            made[name] = core.CounterMetricFamily(name, text, labels=list(labels))
        else:  # its labels are the info's keys, given with each value
            made[name] = core.InfoMetricFamily(name[: -len("_info")], text, labels=[])
    return made


def families(sample: Sample) -> list[Any]:
    """Every metric of :data:`METRICS` with its samples from ``sample``."""
    made = _empty()

    def add(name: str, labels: list[str], value: float) -> None:
        made[name].add_metric(labels, value)

    for stat in sample.keys:
        for writer in stat.writers:
            labels = [stat.hub, stat.key, writer.label]
            totals = writer.totals
            add("shmlog_scalar_updates_total", labels, totals.updates)
            add("shmlog_scalar_value_sum", labels, totals.value_sum)
            add("shmlog_scalar_count_sum", labels, totals.count_sum)
            if totals.updates and writer.current is not None:
                add("shmlog_scalar_current", labels, writer.current)
                add("shmlog_scalar_min", labels, totals.minimum)
                add("shmlog_scalar_max", labels, totals.maximum)
            if writer.last_ns is not None:
                age = (sample.taken_ns - writer.last_ns) / 1e9
                add("shmlog_scalar_last_update_timestamp_seconds", labels, sample.wall - age)
    for hub, values in sorted(sample.progress.items()):
        for field, name in _PROGRESS:
            value = _number(values.get(field))
            if value is not None:
                add(name, [hub], value)
        for worker, value in sorted((values.get("job_workers") or {}).items()):
            add("shmlog_job_worker_data_time_seconds", [hub, worker], float(value))
    made["shmlog_session_info"].add_metric([], {"session": sample.session})
    add("shmlog_session_members", [], sample.members)
    add("shmlog_session_writers", [], sample.writers_total)
    add("shmlog_session_writers_alive", [], sample.writers_alive)
    for label, alive in sorted(sample.writer_states.items()):
        add("shmlog_writer_alive", [label], 1.0 if alive else 0.0)
    for ring in sample.log_rings:
        add("shmlog_log_records_dropped_total", [ring.label], ring.dropped)
        add("shmlog_log_backlog_bytes", [ring.label], ring.backlog)
    add("shmlog_read_duration_seconds", [], sample.read_seconds)
    return list(made.values())


class SessionCollector:
    """A prometheus_client collector: one sample of the session per scrape.

    Scrapes may overlap (the HTTP server answers each in a thread); they
    read the session one at a time.  Once the session is gone a scrape
    returns no metrics and :attr:`gone` says why.
    """

    def __init__(self, sampler: Sampler) -> None:
        require_prometheus()
        self._sampler = sampler
        self._lock = threading.Lock()
        self.closed = False
        self.gone: str | None = None

    @classmethod
    def open(cls, name: str, require_members: bool = True) -> SessionCollector:
        """A collector over a read-only attach of session ``name``, reading totals only."""
        require_prometheus()
        return cls(Sampler.open(name, require_members=require_members, windows=False))

    @property
    def session(self) -> str:
        return self._sampler.name

    def describe(self) -> list[Any]:
        """The metrics without samples: what the registry learns the names from."""
        return list(_empty().values())

    def collect(self) -> list[Any]:
        sample = self.sample()
        return [] if sample is None else families(sample)

    def sample(self) -> Sample | None:
        """The session now, or None once it is gone or this collector closed."""
        with self._lock:
            if self.closed or self.gone is not None:
                return None
            try:
                return self._sampler.sample()
            except SessionGone as exc:
                self.gone = str(exc)
                return None

    def problem(self) -> str | None:
        """Why the session is gone, or None while it is there."""
        with self._lock:
            if self.gone is None and not self.closed:
                self.gone = self._sampler.problem()
            return self.gone

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._sampler.close()

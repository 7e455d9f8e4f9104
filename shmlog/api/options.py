"""The options of ``shmlog.init``: checked, defaulted, and stored in the session.

The creator's options are stored in the control segment as JSON; every
process that joins or attaches later reads them from there.  Everything is
checked here, in the process that calls ``init``, so a bad option fails at
once with a message naming it rather than in the log writer later.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

from ..format.exposition import DEFAULT_HOST, check_host, check_port, require_prometheus
from ..format.log_processor import LogProcessor
from ..format.registered import check_known
from ..shm.session import DEFAULT_CAPACITY, DEFAULT_SEGMENT_BYTES, check_capacity
from ..stats.values import check_hub_name
from .config import ENV_SESSION, shared_storage_from_env

LOG_WRITERS = ("sidecar", "thread", "none")
MIN_SEGMENT_BYTES = 4096


def default_shared_storage() -> bool:
    """True on one node (torchrun's NNODES), else False unless SHMLOG_SHARED_STORAGE=1."""
    return shared_storage_from_env()


def defaults() -> dict[str, Any]:
    """The options ``init`` stores when called with no keyword arguments."""
    return {
        "capacity": DEFAULT_CAPACITY,
        "capacities": {},
        "segment_bytes": DEFAULT_SEGMENT_BYTES,
        "log_writer": "sidecar",
        "log_file": None,
        "log_processor": None,
        "log_interval": 10,
        "hub": "mmengine",
        "shared_storage": default_shared_storage(),
        "tensorboard": None,
        "metrics_port": None,
        "metrics_host": DEFAULT_HOST,
    }


def session_options(
    *,
    capacity: int,
    capacities: dict[str, int] | None,
    segment_bytes: int,
    log_writer: str,
    log_file: str | os.PathLike[str] | None,
    log_processor: dict[str, Any] | None,
    log_interval: int,
    hub: str,
    shared_storage: bool | None,
    tensorboard: bool | None,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_HOST,
) -> dict[str, Any]:
    """The checked options as the session stores them (see ``shmlog.init``)."""
    check_capacity(capacity, "capacity")
    for key, value in (capacities or {}).items():
        check_capacity(value, f"capacities[{key!r}]")
    if (isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int)
            or segment_bytes < MIN_SEGMENT_BYTES):
        raise ValueError(
            f"segment_bytes: expected an int >= {MIN_SEGMENT_BYTES}, got {segment_bytes!r}"
        )
    check_hub_name(hub)
    if log_writer not in LOG_WRITERS:
        raise ValueError(
            f"log_writer: expected 'sidecar', 'thread' or 'none', got {log_writer!r}"
        )
    if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval < 1:
        raise ValueError(f"log_interval: expected an int >= 1, got {log_interval!r}")
    if log_processor is not None:
        if not isinstance(log_processor, dict):
            raise TypeError(
                f"log_processor: expected a LogProcessor config dict, got "
                f"{type(log_processor).__name__}"
            )
        LogProcessor(**log_processor)  # refuse a bad config here, not in the writer
        check_known(log_processor.get("custom_cfg"))
    if tensorboard:
        # Checked here, not in the writer (imported only by processes that
        # ask for it: a DataLoader worker never loads the writer).
        from ..writer.exports import TENSORBOARD_MISSING, tensorboard_installed

        if not tensorboard_installed():
            raise ImportError(TENSORBOARD_MISSING)
    check_host(metrics_host, "metrics_host")
    if metrics_port is not None:
        check_port(metrics_port, "metrics_port")
        if log_writer == "none":
            raise ValueError(
                f"metrics_port={metrics_port!r}: the metrics endpoint runs in the log writer, "
                f"and log_writer='none' has none; use log_writer='sidecar' or 'thread', or "
                f"serve the session from another process with 'shmlog serve'"
            )
        require_prometheus()  # here, not in the writer: ImportError naming the extra
    if shared_storage is None:
        shared_storage = default_shared_storage()
    return {
        "capacity": capacity,
        "capacities": dict(capacities or {}),
        "segment_bytes": segment_bytes,
        "log_writer": log_writer,
        "log_file": None if log_file is None else os.path.abspath(os.fspath(log_file)),
        "log_processor": log_processor,
        "log_interval": log_interval,
        "hub": hub,
        "shared_storage": bool(shared_storage),
        "tensorboard": tensorboard,
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
    }


def ignored(asked: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The options a joining ``init`` asked for that the session does not have.

    Defaults are not a request: only what differs from them counts.
    """
    base = defaults()
    return {k: v for k, v in asked.items() if stored.get(k) != v and v != base.get(k)}


def default_name() -> str:
    """The name ``init()`` uses when none is given."""
    inherited = os.environ.get(ENV_SESSION)
    if inherited:
        return inherited
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id:
        # Every rank of one torchrun launch on a node sees the same run id and
        # master port; a restart gets new workers and a new session.
        parts = [run_id, os.environ.get("MASTER_PORT", ""),
                 os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")]
        return _sanitize("torchrun-" + "-".join(p for p in parts if p))
    return f"run-{os.getpid()}-{secrets.token_hex(4)}"


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return cleaned[:64]

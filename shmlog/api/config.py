"""This process's settings: one typed, frozen object read from its environment.

:meth:`Config.from_env` reads the settings shmlog takes from the
environment, once per call, and the object is passed to what needs them:
``init``'s default for ``shared_storage``, ``report_progress``'s job
exchange (the node's rank and size).  It is read anew where it is needed,
never kept from import time: a launcher or a test may set a variable after
``import shmlog``, and ``init`` itself sets ``SHMLOG_SESSION`` for the
children it starts.

Who the process is (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``SHMLOG_WORKER_ID``) is not a setting: it has its one rule in
``shmlog.api.process``, which reads those.  Read elsewhere, for reasons of
layering or timing: ``SHMLOG_DEVICE_SLOTS`` by ``shmlog.stats.device_backend``
when it makes its staging pool (unless ``shmlog.set_device_slots`` said
first), ``SHMLOG_FENCE`` by ``shmlog.shm.fence``, the colour variables by
``shmlog.format.formatter``, torchrun's run id and master port for a default
session name by ``shmlog.api.options.default_name``, and ``MASTER_PORT`` by
``shmlog.mmengine.hook``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ENV_RECORD_RING_BYTES",
    "ENV_SESSION",
    "ENV_SHARED_STORAGE",
    "ENV_WORKER",
    "RECORD_RING_BYTES",
    "Config",
    "env_int",
    "record_ring_bytes",
    "shared_storage_from_env",
]

ENV_SESSION = "SHMLOG_SESSION"
ENV_WORKER = "SHMLOG_WORKER_ID"
ENV_SHARED_STORAGE = "SHMLOG_SHARED_STORAGE"
# Bytes of the record ring through which each process ships its log records
# (the default; SHMLOG_RECORD_RING_BYTES sets it for processes that start
# logging with it in their environment).
RECORD_RING_BYTES = 256 << 10
ENV_RECORD_RING_BYTES = "SHMLOG_RECORD_RING_BYTES"
_RING_LIMITS = (64 << 10, 1 << 30)


def env_int(name: str, default: int, minimum: int,
            environ: Mapping[str, str] | None = None) -> int:
    """Integer environment variable ``name``; ValueError naming it when malformed."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected an integer >= {minimum}"
        )
    return value


@dataclass(frozen=True)
class Config:
    """What this process's environment says of shmlog's settings and of the job's nodes."""

    session: str  # SHMLOG_SESSION: the session this process is in or started in ('' none)
    shared_storage: bool  # the log directory is shared by every node
    node_rank: int  # GROUP_RANK: this node's index in the job
    local_world_size: int  # LOCAL_WORLD_SIZE: ranks on this node
    record_ring_bytes: int = RECORD_RING_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The settings as the environment gives them now.

        ValueError naming the variable when ``GROUP_RANK`` or
        ``LOCAL_WORLD_SIZE`` is not an integer of the expected range.
        """
        env = os.environ if environ is None else environ
        return cls(
            session=env.get(ENV_SESSION, ""),
            shared_storage=shared_storage_from_env(env),
            node_rank=env_int("GROUP_RANK", 0, 0, env),
            local_world_size=env_int("LOCAL_WORLD_SIZE", 1, 1, env),
            record_ring_bytes=record_ring_bytes(env),
        )


def record_ring_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The size of a process's record ring: ``SHMLOG_RECORD_RING_BYTES``, else
    :data:`RECORD_RING_BYTES`.

    A record may take a quarter of its ring; a longer one keeps the head of
    each long text (``shmlog.shm.record_rings.longest_text``: 8,184 characters
    at the default 256 KiB) and ends it with ``[truncated by shmlog]``.  A
    larger ring keeps longer messages, and takes that much more of /dev/shm
    per logging process.  ValueError naming the variable when it is not a
    number of bytes in range.
    """
    raw = (os.environ if environ is None else environ).get(ENV_RECORD_RING_BYTES)
    if raw is None:
        return RECORD_RING_BYTES
    low, high = _RING_LIMITS
    try:
        size = int(raw)
    except ValueError:
        size = -1
    if not low <= size <= high:
        raise ValueError(
            f"{ENV_RECORD_RING_BYTES}={raw!r}: expected a number of bytes from {low} to {high} "
            f"(a log record may take a quarter of it)"
        )
    return size


def shared_storage_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """True on one node (torchrun's NNODES), else False unless SHMLOG_SHARED_STORAGE=1.

    Read alone by ``init``, which must not refuse a malformed GROUP_RANK it does not use.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_SHARED_STORAGE)
    if explicit is not None:
        return explicit not in ("0", "false", "False", "no")
    try:
        return int(env.get("NNODES", env.get("GROUP_WORLD_SIZE", "1"))) <= 1
    except ValueError:
        return True

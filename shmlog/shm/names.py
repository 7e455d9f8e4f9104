"""Names and limits: sessions, their segments in /dev/shm, keys, ring capacities.

Segments of session ``S`` of user ``U`` are named ``/shmlog-U-S@<part>``:
``@ctl`` (``shmlog.shm.control``), ``@r<i>`` (scalar rings), ``@i<i>``
(runtime info) and ``@l<i>`` (log record rings).  The uid in the name keeps
users apart; it is not what protects a session (see ``shmlog.shm.segment``).
Keys are at most ``KEY_MAX_BYTES`` of UTF-8 (hub name included), and a ring
retains at most ``MAX_CAPACITY`` records.
"""

from __future__ import annotations

import os
import re
from typing import Any

KEY_MAX_BYTES = 256
MAX_CAPACITY = 1 << 26


def check_capacity(capacity: Any, what: str) -> int:
    """``capacity`` if a ring can retain that many records, else ValueError."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"{what}: expected an int >= 1, got {capacity!r}")
    if capacity > MAX_CAPACITY:
        raise ValueError(
            f"{what}: {capacity} records is more than the {MAX_CAPACITY} a ring can hold"
        )
    return capacity


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: Any) -> str:
    """``name`` if it can name a session, else ValueError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"session name {name!r}: expected 1-64 characters of letters, digits, '_', '.' "
            f"or '-', starting with a letter or digit"
        )
    return name


def prefix(name: str, uid: int | None = None) -> str:
    """The name prefix (no leading slash) shared by a session's segments."""
    return f"shmlog-{os.getuid() if uid is None else uid}-{name}@"


def part_name(name: str, part: str) -> str:
    """The POSIX name (leading slash) of segment ``part`` of session ``name``."""
    return "/" + prefix(name) + part


def control_name(name: str) -> str:
    return part_name(name, "ctl")


def encode_key(key: str) -> bytes:
    raw = key.encode("utf-8")
    if len(raw) > KEY_MAX_BYTES:
        raise ValueError(
            f"key {key!r} is {len(raw)} bytes in UTF-8; shared keys are limited to "
            f"{KEY_MAX_BYTES} bytes (hub name included)"
        )
    return raw

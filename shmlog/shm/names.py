"""Names of a session's segments in /dev/shm.

Segments of session ``S`` of user ``U`` are named ``/shmlog-U-S@<part>``:
``@ctl`` (``shmlog.shm.control``), ``@r<i>`` (scalar rings), ``@i<i>``
(runtime info) and ``@l<i>`` (log record rings).  The uid in the name keeps
users apart; it is not what protects a session (see ``shmlog.shm.segment``).
"""

from __future__ import annotations

import os
import re
from typing import Any

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

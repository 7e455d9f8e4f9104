"""What ``shmlog top`` and ``shmlog serve`` watch: a session named, or the only live one.

Sampling itself is ``shmlog.format.sample`` (the log writer's metrics
endpoint samples the same way); this module picks the session for a command.
"""

from __future__ import annotations

import os

from ..errors import SessionError, SessionGone
from ..format.sample import (
    KeyStat,
    LogRingStat,
    Sample,
    Sampler,
    WriterStat,
)
from ..format.watching import attach_readonly
from ..shm.session import check_name
from .sessions import list_sessions

# The name ``shmlog top`` has always used for its sampler.
Watcher = Sampler

__all__ = [
    "KeyStat",
    "LogRingStat",
    "Sample",
    "Sampler",
    "SessionGone",
    "Watcher",
    "WriterStat",
    "attach_readonly",
    "choose_session",
]


def choose_session(name: str | None, command: str = "top") -> str:
    """``name`` checked, or the only live session of this user (``command`` names the tool)."""
    if name is not None:
        return check_name(name)
    sessions = list_sessions()
    alive = [s.name for s in sessions if s.status.startswith("alive")]
    if len(alive) == 1:
        return alive[0]
    if not alive:
        others = f" ({len(sessions)} not alive; 'shmlog ls' shows them)" if sessions else ""
        raise SessionError(f"no live shmlog session for uid {os.getuid()}{others}")
    verb = "watch" if command == "top" else "serve"
    raise SessionError(
        f"{len(alive)} live shmlog sessions: {', '.join(alive)}; name the one to {verb}: "
        f"shmlog {command} <session>"
    )

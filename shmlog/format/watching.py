"""Attaching to a session to watch it from outside (``shmlog top``, the metrics endpoint).

A watcher maps the session's segments without joining: it is never a
member, never claims a slot and never stores into the session
(:func:`attach_readonly`).  :func:`watch_problem` says why a session can no
longer be watched: it closed, or every process that joined it exited.
"""

from __future__ import annotations

import os

import posix_ipc

from ..errors import SegmentError, SessionError
from ..shm.control import STATE_CLOSED, Control
from ..shm.session import SessionSegments, check_name


def watch_problem(control: Control, name: str, require_members: bool = True) -> str | None:
    """Why the session can no longer be watched, or None while it is alive.

    Without ``require_members`` a session whose members all left is still
    watched until it closes (the log writer goes on writing for their
    children meanwhile).
    """
    if control.read_state().state == STATE_CLOSED:
        return f"shmlog session {name!r} was closed"
    if require_members and not control.live_members():
        return (
            f"shmlog session {name!r} is stale: every process that joined it has exited "
            f"('shmlog clean' removes it)"
        )
    return None


def attach_readonly(name: str, require_members: bool = True) -> SessionSegments:
    """Map session ``name`` for reading only: no member, no slot, no store."""
    try:
        segments = SessionSegments.attach_readonly(check_name(name))
    except posix_ipc.ExistentialError:
        raise SessionError(
            f"no shmlog session named {name!r} exists for uid {os.getuid()} (it was "
            f"closed, or never created); 'shmlog ls' lists the sessions"
        ) from None
    except (SegmentError, OSError) as exc:
        raise SessionError(f"cannot read shmlog session {name!r}: {exc}") from None
    # A control segment appears whole (see Segment.create): ready or closed.
    if segments.control.read_state().state == STATE_CLOSED:
        problem: str | None = f"shmlog session {name!r} is closing"
    else:
        problem = watch_problem(segments.control, name, require_members)
    if problem is not None:
        segments.close()
        raise SessionError(problem)
    return segments

"""Looking at sessions from outside: what ``shmlog ls`` and ``shmlog clean`` see.

Inspection attaches to a session's control segment without joining it, so
listing never keeps a stale session alive nor changes a live one.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import posix_ipc

from . import arena
from .control import STATE_CLOSED, Control
from .ring import read_header
from .segment import KIND_CONTROL, KIND_RINGS, SHM_DIR, Segment, SegmentError
from .session import destroy, prefix


class SessionInfo(NamedTuple):
    name: str
    creator: int
    status: str  # "alive", "stale", "closing" or "broken: <why>"
    members: int
    writers: int
    keys: int
    bytes: int
    created_ns: int


def session_names(uid: int | None = None) -> list[str]:
    """Names of this user's sessions, including ones left without a control segment."""
    start = prefix("", uid)[:-1]  # "shmlog-<uid>-"
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return sorted({
        entry[len(start) : entry.rindex("@")]
        for entry in entries
        if entry.startswith(start) and "@" in entry
    })


def _segment_bytes(name: str) -> int:
    total = 0
    start = prefix(name)
    for entry in os.listdir(SHM_DIR):
        if entry.startswith(start):
            try:
                total += os.stat(os.path.join(SHM_DIR, entry)).st_size
            except OSError:
                pass
    return total


def describe(name: str) -> SessionInfo:
    """A one-line summary of session ``name``."""
    size = _segment_bytes(name)
    try:
        segment = Segment.attach("/" + prefix(name) + "ctl", KIND_CONTROL)
    except (posix_ipc.Error, SegmentError, OSError) as exc:
        return SessionInfo(name, 0, f"broken: {exc}", 0, 0, 0, size, 0)
    try:
        control = Control(segment)
        state = control.read_state()
        members = len(control.live_members())
        writers = sum(1 for w in control.writers() if w.alive())
        keys = _count_keys(name, state.ring_segments, segment.generation)
        if state.state == STATE_CLOSED:
            status = "closing"
        else:
            status = "alive" if members else "stale"
        return SessionInfo(
            name, state.creator, status, members, writers, keys, size, state.created_ns
        )
    finally:
        segment.close()


def _count_keys(name: str, count: int, generation: int) -> int:
    keys: set[str] = set()
    for index in range(count):
        try:
            segment = Segment.attach(f"/{prefix(name)}r{index}", KIND_RINGS, generation)
        except (posix_ipc.Error, SegmentError, OSError):
            continue
        try:
            for _, offset in arena.walk(segment, 64, 0):
                keys.add(read_header(segment.buf, offset).key)
        finally:
            segment.close()
    return len(keys)


def list_sessions() -> list[SessionInfo]:
    return [describe(name) for name in session_names()]


def clean(everything: bool = False) -> list[str]:
    """Remove stale (or, with ``everything``, all) sessions of this user."""
    removed = []
    for info in list_sessions():
        removable = everything or info.status == "stale" or info.status.startswith("broken")
        if removable and destroy(info.name, stale_only=not everything):
            removed.append(info.name)
    return removed

"""Looking at sessions from outside: what ``shmlog ls`` and ``shmlog clean`` see.

Inspection attaches to a session's control segment without joining it, so
listing never keeps a stale session alive nor changes a live one.

A session is *alive* while a member lives, *orphaned* while no member does
but processes with a slot still run (their pids are shown: the
children of members that died), *stale* when none of its processes is left,
*closing* while its last member removes it, and *broken* when its control
segment cannot be used.  ``clean`` removes stale and broken sessions only;
orphaned ones go with ``force``, live ones only with ``everything``.  Seen
from another PID namespace than its members' (a sidecar container), a
session with members is taken as alive: pids cannot be checked there
(``shmlog.shm.liveness``).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import posix_ipc

from ..errors import SegmentError
from ..format.exposition import metrics_url
from ..shm.control import STATE_CLOSED, Control
from ..shm.info import InfoStore
from ..shm.lifecycle import live_slot_pids
from ..shm.names import SHM_DIR, own_entries, prefix
from ..shm.scalar_rings import RingDirectory
from ..shm.session import attach_control, destroy

# The status of a session whose members are in another PID namespace: this
# process cannot tell whether they run, so it treats them as running.
OTHER_NAMESPACE = "alive (members in another PID namespace)"


class SessionInfo(NamedTuple):
    name: str
    creator: int
    # "alive", OTHER_NAMESPACE, "orphaned (pids ...)", "stale", "closing" or "broken: <why>"
    status: str
    members: int
    writers: int
    keys: int
    bytes: int
    created_ns: int
    live_pids: tuple[int, ...] = ()  # members and writers still running
    metrics: str = ""  # URL of the log writer's metrics endpoint, "" when it serves none


def session_names() -> list[str]:
    """Names of this user's sessions, including ones left without a control segment.

    Only files of this uid count: entries another user put under this uid's
    names are no session of this user's (see ``shmlog.shm.segment``).
    """
    start = prefix("")[:-1]  # "shmlog-<uid>-"
    return sorted({
        entry[len(start) : entry.rindex("@")] for entry in own_entries(start) if "@" in entry
    })


def _segment_bytes(name: str) -> int:
    total = 0
    for entry in own_entries(prefix(name)):
        try:
            total += os.lstat(os.path.join(SHM_DIR, entry)).st_size
        except OSError:
            pass
    return total


def describe(name: str) -> SessionInfo:
    """A one-line summary of session ``name``."""
    size = _segment_bytes(name)
    try:
        control = attach_control(name)
    except (posix_ipc.Error, SegmentError, OSError) as exc:
        return SessionInfo(name, 0, f"broken: {exc}", 0, 0, 0, size, 0)
    try:
        state = control.read_state()
        members = control.live_members()
        sees = control.sees_members()
        writers = len(control.live_slots())
        keys = _count_keys(name, control)
        pids = tuple(sorted({pid for _slot, pid, _start in members} | set(live_slot_pids(control))))
        if state.state == STATE_CLOSED:
            status = "closing"
        elif members and not sees:
            status = OTHER_NAMESPACE
        elif members:
            status = "alive"
        elif pids:
            status = f"orphaned (pids {' '.join(map(str, pids))})"
        else:
            status = "stale"
        return SessionInfo(
            name, state.creator, status, len(members), writers, keys, size, state.created_ns,
            pids, _metrics_url(name, control) or "",
        )
    finally:
        control.segment.close()


def _metrics_url(name: str, control: Control) -> str | None:
    info = InfoStore(name, control, control.segment.generation)
    try:
        return metrics_url(info.get)
    except (posix_ipc.Error, SegmentError, OSError, RuntimeError):
        return None  # a segment vanished: the session is being removed
    finally:
        info.close()


def _count_keys(name: str, control: Control) -> int:
    rings = RingDirectory(name, control, control.segment.generation)
    try:
        return len(rings.keys())
    except (posix_ipc.Error, SegmentError, OSError, RuntimeError):
        return 0  # a segment vanished: the session is being removed
    finally:
        rings.close()


def list_sessions() -> list[SessionInfo]:
    return [describe(name) for name in session_names()]


def clean(everything: bool = False, force: bool = False) -> list[str]:
    """Remove stale and broken sessions of this user (see the module docstring).

    ``force``: orphaned sessions too; ``everything``: every session, alive or not.
    """
    removed = []
    for info in list_sessions():
        removable = (
            everything or info.status == "stale" or info.status.startswith("broken")
            or (force and info.status.startswith("orphaned"))
        )
        if removable and destroy(info.name, stale_only=not everything, force=force):
            removed.append(info.name)
    return removed

"""Looking at sessions from outside: what ``shmlog ls`` and ``shmlog clean`` see.

Inspection attaches to a session's control segment without joining it, so
listing never keeps a stale session alive nor changes a live one.

A session is *alive* while a member lives, *orphaned* while no member does
but processes with a slot still run (their pids are shown: the
children of members that died), *stale* when none of its processes is left,
*closing* while its last member removes it, and *broken* when its control
segment cannot be used.  ``clean`` removes stale and broken sessions only;
orphaned ones go with ``force``, live ones only with ``everything`` (never
when sessions are named); ``plan`` says what it would do.  Seen
from another PID namespace than its members' (a sidecar container), a
session with members is taken as alive: pids cannot be checked there
(``shmlog.shm.liveness``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import posix_ipc

from ..errors import SegmentError
from ..format.exposition import metrics_url
from ..shm.control import STATE_CLOSED, Control
from ..shm.info import InfoStore
from ..shm.lifecycle import live_slot_pids
from ..shm.names import SHM_DIR, check_name, own_entries, prefix
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


class Verdict(NamedTuple):
    """What ``clean`` does with one session: remove it, or why it stays."""

    info: SessionInfo
    remove: bool
    reason: str  # why it stays ("" when removed)


def judge(info: SessionInfo, everything: bool = False, force: bool = False) -> Verdict:
    """Whether ``clean`` removes ``info``'s session (see the module docstring)."""
    status = info.status
    if everything or status == "stale" or status.startswith("broken"):
        return Verdict(info, True, "")
    if status.startswith("orphaned"):
        if force:
            return Verdict(info, True, "")
        return Verdict(info, False, f"{status}: processes still write to it; "
                                    f"--force removes it and cuts them off")
    if status == OTHER_NAMESPACE:
        return Verdict(info, False, "its members run in another PID namespace, where this "
                                    "process cannot check them: clean it from their namespace")
    if status == "closing":
        return Verdict(info, False, "closing: its last member is removing it")
    pids = " ".join(map(str, info.live_pids))
    return Verdict(info, False, f"alive (pids {pids}): stop its processes first")


def plan(names: Sequence[str] | None = None, everything: bool = False,
         force: bool = False) -> list[Verdict]:
    """What ``clean`` would do, session by session; nothing is removed.

    ``names``: these sessions only (ValueError for a name no session of this
    user has); ``everything`` then does not apply.  None: every session.
    """
    if names is None:
        return [judge(info, everything, force) for info in list_sessions()]
    known = set(session_names())
    verdicts = []
    for name in dict.fromkeys(names):
        check_name(name)
        if name not in known:
            raise ValueError(f"no shmlog session named {name!r} for uid {os.getuid()} "
                             f"('shmlog ls' lists them)")
        verdicts.append(judge(describe(name), False, force))
    return verdicts


def remove(verdict: Verdict, force: bool = False, everything: bool = False) -> bool:
    """Carry out a removing ``verdict``; False when the session changed meanwhile.

    The state is checked again under the session lock: a stale session that
    ``shmlog.init`` took over since it was judged stays.
    """
    return verdict.remove and destroy(verdict.info.name, stale_only=not everything, force=force)


def clean(everything: bool = False, force: bool = False,
          names: Sequence[str] | None = None) -> list[str]:
    """Remove stale and broken sessions of this user (see the module docstring).

    ``force``: orphaned sessions too; ``everything``: every session, alive or
    not; ``names``: only these (never a live one).  Returns the names removed.
    """
    return [v.info.name for v in plan(names, everything and names is None, force)
            if remove(v, force, everything and names is None)]

"""Creating, joining, replacing and removing a session, under its lock.

A session exists once its control segment does: the creator builds it whole
under a temporary name and links it (``Segment.create`` with ``prepare``), so
nobody ever attaches to a half-made session.  Joining takes the session lock
(``flock`` on the control segment), prunes members that died and adds the
caller.  A session whose members all died is *stale* when no process writes
to it any more (creating replaces it, joining refuses it), and *orphaned*
while some still do (their children, typically DataLoader workers): it is
then joined, histories and all, by creating and by attaching alike, and is
removed only on request (``destroy(force=True)``), never by a clean-up of
stale sessions.  The last member to leave marks the session closed and
unlinks every segment; one that died between the two is finished by the next
process that opens the name.
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
import warnings
from collections.abc import Callable
from typing import Any

import posix_ipc

from ..errors import SegmentError, SessionError
from .control import CONTROL_BYTES, STATE_CLOSED, STATE_READY, Control
from .doorbell import Doorbell
from .liveness import is_alive, pid_namespace, process_start
from .names import check_name, control_name, list_names, prefix, unlink
from .segment import KIND_CONTROL, Segment

_OPEN_TIMEOUT = 10.0
# The control segment in whole pages: what tmpfs reserves for it anyway.
CONTROL_SEGMENT_BYTES = -(-CONTROL_BYTES // mmap.PAGESIZE) * mmap.PAGESIZE


def attach_control(name: str) -> Control:
    """Map the control segment of session ``name`` without joining the session.

    Raises ``posix_ipc.ExistentialError`` when there is none and
    :class:`SegmentError` when it is not one this process may use.
    """
    segment = Segment.attach(control_name(check_name(name)), KIND_CONTROL)
    if segment.size < CONTROL_BYTES:
        segment.close()
        raise SegmentError(
            f"shared memory {segment.name} is not a usable shmlog control segment: it is "
            f"{segment.size} bytes, smaller than the {CONTROL_BYTES} its tables take. "
            f"Remove it with 'shmlog clean'."
        )
    control = Control(segment)
    # A control segment is published whole (ready), and only ever changes to
    # closed: any other state is damage, and waiting would never end.
    state = control.read_state().state
    if state not in (STATE_READY, STATE_CLOSED):
        segment.close()
        raise SegmentError(
            f"shared memory {segment.name} is not a usable shmlog control segment: its "
            f"header is valid but its state is {state}, not {STATE_READY} (ready) or "
            f"{STATE_CLOSED} (closed), so it was damaged or not written by shmlog. "
            f"Remove it with 'shmlog clean'."
        )
    return control


def open_control(
    name: str,
    *,
    member: bool,
    create: bool,
    options: dict[str, Any] | None = None,
    writer_placeholder: bool = False,
) -> tuple[Control, bool, tuple[int, int] | None]:
    """Create or join session ``name``: (its control, whether created here, this member).

    ``member`` processes keep the session alive; ``create`` allows creating it
    (and replacing a stale one whose members all died).  With
    ``writer_placeholder``, a session created here names its creator as its log
    writer until the creator names the real one (a sidecar it starts), so that
    processes joining meanwhile wait for that one instead of taking over.
    """
    check_name(name)
    deadline = time.monotonic() + _OPEN_TIMEOUT
    me = (os.getpid(), process_start(os.getpid()) or 0)
    joined = me if member else None

    def prepare(segment: Segment) -> None:
        # Everything a joiner reads is in place before the name exists.
        fresh = Control(segment)
        fresh.write_config(options or {})
        Doorbell.initialise(segment.buf)
        if writer_placeholder:
            fresh.write_state(writer_pid=me[0], writer_start=me[1])
        fresh.write_state(pid_namespace=pid_namespace())
        fresh.write_state(state=STATE_READY, creator=me[0], created_ns=time.time_ns())
        if member:
            fresh.add_member(*me)

    waiting = "its control segment vanished each time this process tried to attach it"
    while True:
        if time.monotonic() > deadline:
            raise SessionError(
                f"timed out after {_OPEN_TIMEOUT:.0f} s opening shmlog session {name!r}: "
                f"{waiting}. 'shmlog ls' shows its state; 'shmlog clean' removes it if "
                f"every process of it has exited."
            )
        control, created = _create_or_attach(name, create, prepare)
        if control is None:
            time.sleep(0.001)
            continue
        if created:
            return control, True, joined
        stale = False
        try:
            with control:
                state = control.read_state().state
                if state == STATE_CLOSED and _still_named(control.segment):
                    # Its last member died between closing and unlinking
                    # it (it would hold this lock otherwise): finish that.
                    destroy_locked(control, name)
                # A closed session is being unlinked by its last member: try again.
                waiting = (
                    f"{control.segment.name} stayed closed, as if its last member never "
                    f"finished removing it"
                )
                if state == STATE_READY and (member or create):
                    refuse_other_namespace(control, name)
                if state == STATE_READY:
                    alive = control.prune_members() > 0
                    writing = [] if alive else live_slot_pids(control)
                    if alive or writing:
                        if member:
                            control.add_member(*me)
                        if writing and create:
                            _warn_adopting(name, writing)
                        return control, False, joined
                    if create:
                        destroy_locked(control, name)  # stale: replace it
                    else:
                        stale = True
        except BaseException:
            control.segment.close()
            raise
        # Closed only now: leaving ``with control`` unlocks its descriptor.
        control.segment.close()
        if stale:
            raise SessionError(
                f"shmlog session {name!r} is stale: every process that joined it "
                f"has exited. Run 'shmlog clean' or call shmlog.init({name!r})."
            )


def live_slot_pids(control: Control) -> list[int]:
    """Pids of the live processes that hold a slot of the session (members or not).

    From another PID namespace every slot's process counts as alive
    (``shmlog.shm.liveness``).
    """
    if not control.sees_members():
        return sorted({w.pid for w in control.slots()})
    return sorted({w.pid for w in control.slots() if is_alive(w.pid, w.start)})


def refuse_other_namespace(control: Control, name: str) -> None:
    """Raise unless this process sees the pids of session ``name``'s members.

    Joining from another PID namespace would let each side take the other's
    live processes for dead ones, and replacing the session would destroy it
    under its members: both are refused.
    """
    if control.sees_members():
        return
    raise SessionError(
        f"shmlog session {name!r} was created in another PID namespace (another container "
        f"of the pod, say): this process cannot see its members' pids, so it can neither join "
        f"it nor replace it. Read it with 'shmlog ls', 'shmlog top' or 'shmlog serve'; to "
        f"join it, run in the same PID namespace (Kubernetes: shareProcessNamespace: true)."
    )


def _warn_adopting(name: str, pids: list[int]) -> None:
    warnings.warn(
        f"shmlog session {name!r} has no member left, but processes still write to it "
        f"(pids {', '.join(map(str, pids))}); joining it, with the histories it holds, "
        f"instead of replacing it under them. Run 'shmlog clean --force' first to start "
        f"a fresh session.",
        stacklevel=4,  # open_control, SessionSegments.open, shmlog.init, its caller
    )


def leave(control: Control, name: str, member: tuple[int, int]) -> None:
    """Remove ``member``; the last one to leave removes the session."""
    with control:
        control.remove_member(*member)
        if control.prune_members() == 0:
            destroy_locked(control, name)


def _create_or_attach(
    name: str, create: bool, prepare: Callable[[Segment], None]
) -> tuple[Control | None, bool]:
    if create:
        try:
            segment = Segment.create(
                control_name(name), CONTROL_SEGMENT_BYTES, KIND_CONTROL, secrets.randbits(63),
                prepare,
            )
            return Control(segment), True
        except posix_ipc.ExistentialError:
            pass
    try:
        return attach_control(name), False
    except posix_ipc.ExistentialError:
        if not create:
            raise SessionError(
                f"no shmlog session named {name!r} exists for uid {os.getuid()} (it was "
                f"closed, or never created)"
            ) from None
        return None, False


def _still_named(segment: Segment) -> bool:
    """Whether ``segment``'s name still refers to it (not unlinked, not replaced)."""
    try:
        return os.lstat(f"/dev/shm/{segment.name.lstrip('/')}").st_ino == os.fstat(
            segment.fd
        ).st_ino
    except OSError:
        return False


def destroy_locked(control: Control, name: str) -> None:
    """Mark the session closed and unlink all its segments (lock held)."""
    control.write_state(state=STATE_CLOSED)
    ctl = control_name(name)
    for segment_name in list_names(prefix(name)):
        if segment_name != ctl:
            unlink(segment_name)
    unlink(ctl)


def destroy(name: str, stale_only: bool = False, force: bool = False) -> bool:
    """Remove session ``name`` whatever its state; False when it did not exist.

    ``stale_only``: only when no process of it is alive, as seen under the
    session lock (a stale session that ``shmlog.init`` replaced meanwhile
    stays): no member, and unless ``force`` no process with a slot
    either (an orphaned session's children go on writing into it).
    """
    try:
        control = attach_control(name)
    except (posix_ipc.ExistentialError, SegmentError):
        # No usable control segment: remove what is this user's, and only that.
        removed = [segment_name for segment_name in list_names(prefix(name)) if unlink(segment_name)]
        return bool(removed)
    try:
        with control:
            if stale_only and control.read_state().state == STATE_READY and (
                control.live_members() or (not force and live_slot_pids(control))
            ):
                return False
            destroy_locked(control, name)
    finally:
        control.segment.close()
    return True



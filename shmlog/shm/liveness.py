"""Whether a process or thread still runs, from ``/proc``.

A pid alone names a process only until it exits: the kernel hands the number
to the next process it starts.  So every process that shared memory records
(members, slots, the log writer) is kept as (pid, start time), the start time
being field 22 of ``/proc/<pid>/stat`` in clock ticks since boot, and it is
alive only while ``/proc`` shows that pid with that start time.  A zombie
counts as gone.  A thread is alive while its process is and
``/proc/<pid>/task/<tid>`` exists.

Pids mean something only in the PID namespace that gave them.  A process in
another one (a sidecar container of a Kubernetes pod shares /dev/shm but not,
by default, the pids) cannot tell a live process of the session from a dead
one: :func:`sees_pids_of` says whether it can, from the namespace the
session's creator recorded (:func:`pid_namespace`), and where it cannot, the
session's processes are all taken as alive.
"""

from __future__ import annotations

import os


def proc_stat(pid: int) -> list[bytes] | None:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (state, ppid, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return raw[raw.rindex(b")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, None when it is gone."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    if fields[0] in (b"Z", b"X"):  # zombie or dead: not running any more
        return None
    return int(fields[19])


def is_alive(pid: int, start: int) -> bool:
    return pid > 0 and process_start(pid) == start


def thread_alive(pid: int, start: int, tid: int) -> bool:
    """Whether thread ``tid`` of process (``pid``, ``start``) still runs (0: the main thread)."""
    if not is_alive(pid, start):
        return False
    return tid in (0, pid) or os.path.exists(f"/proc/{pid}/task/{tid}")


def pid_namespace() -> int:
    """This process's PID namespace (the inode of ``/proc/self/ns/pid``), 0 when unknown."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def sees_pids_of(namespace: int) -> bool:
    """Whether this process sees the pids of PID namespace ``namespace`` (0: not known,
    taken as this process's own)."""
    if namespace == 0:
        return True
    mine = pid_namespace()
    return mine == 0 or mine == namespace

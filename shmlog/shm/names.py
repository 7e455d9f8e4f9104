"""Names and limits in /dev/shm: sessions, their segments, keys, ring capacities, entries.

Segments of session ``S`` of user ``U`` are named ``/shmlog-U-S@<part>``:
``@ctl`` (``shmlog.shm.control``), ``@r<i>`` (scalar rings), ``@i<i>``
(runtime info) and ``@l<i>`` (log record rings).  The uid in the name keeps
users apart; it is not what protects a session (see ``shmlog.shm.segment``).
Keys are at most ``KEY_MAX_BYTES`` of UTF-8 (hub name included), and a ring
retains at most ``MAX_CAPACITY`` records.

Entries of /dev/shm (:func:`entry_problem`, :func:`unlink`,
:func:`own_entries`): /dev/shm is writable by every user (with the sticky
bit), so anyone can put a file or a symbolic link under a name a session
will want.  An entry that is a link, or that another uid owns, is never
used, never removed and never followed: code that needs its name gets
:func:`entry_problem`'s account of it (the path, what it is, its owner) for
its error, and teardown steps over it, since only regular files of this uid
are ever removed.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

import posix_ipc

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


SHM_DIR = "/dev/shm"
TEMP_MARK = ".tmp"


def shm_path(name: str) -> str:
    """The path in /dev/shm of POSIX shared-memory name ``name``."""
    return os.path.join(SHM_DIR, name.lstrip("/"))


def _owned(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()


def entry_problem(name: str) -> str | None:
    """Why the entry at ``name`` is not this user's to use or remove; None if it is (or is absent)."""
    path = shm_path(name)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        try:
            target = repr(os.readlink(path))
        except OSError:
            target = "somewhere unreadable"
        return (
            f"{path} is a symbolic link (to {target}, made by uid {info.st_uid}); shmlog "
            f"never follows links in {SHM_DIR}. Remove it, or choose another session name"
        )
    if info.st_uid != os.getuid():
        return (
            f"{path} belongs to uid {info.st_uid}, not to this process's uid {os.getuid()}; "
            f"shmlog never uses or removes another user's files. Choose another session "
            f"name, or ask uid {info.st_uid} to remove it"
        )
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file; remove it, or choose another session name"
    return None


def unlink(name: str) -> bool:
    """Remove ``name`` if it is a file of this uid; False when it is gone or not ours.

    Never raises for an entry shmlog may not remove (see the module
    docstring): teardown goes on past it, and leaves it where it is.
    """
    try:
        info = os.lstat(shm_path(name))
    except OSError:
        return False
    if not _owned(info):
        return False
    try:
        posix_ipc.unlink_shared_memory(name)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        return False
    return True


def being_created(entry: str) -> bool:
    """Whether ``entry`` is a segment a live process is still building (``Segment.create``)."""
    _, mark, suffix = entry.rpartition(TEMP_MARK)
    pid = suffix.partition("-")[0]
    if not mark or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_entries(prefix: str) -> list[str]:
    """Entries of /dev/shm starting with ``prefix`` that are regular files of this uid."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        try:
            if _owned(os.lstat(os.path.join(SHM_DIR, entry))):
                found.append(entry)
        except OSError:
            pass
    return sorted(found)


def list_names(prefix: str) -> list[str]:
    """Names of this uid's segments in /dev/shm that start with ``prefix`` (no leading slash).

    Entries of other users, links, and segments that a live process is still
    building are not listed.
    """
    return ["/" + entry for entry in own_entries(prefix) if not being_created(entry)]

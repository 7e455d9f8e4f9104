"""Entries of /dev/shm: whose they are, which may be used, listing and removing them.

/dev/shm is writable by every user (with the sticky bit), so anyone can put a
file or a symbolic link under a name a session will want.  An entry that is
a link, or that another uid owns, is never used, never removed and never
followed: code that needs its name gets :func:`entry_problem`'s account of
it (the path, what it is, its owner) for its error, and teardown steps over
it, since only regular files of this uid are ever removed.
"""

from __future__ import annotations

import os
import stat

import posix_ipc

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

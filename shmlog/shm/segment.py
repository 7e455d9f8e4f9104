"""Named POSIX shared-memory segments: create, attach, check, unlink.

Every shmlog segment starts with the same 64-byte header so that attaching
can refuse anything that is not a segment of this version, of this user:

    offset  size  field
    0       8     magic  b"SHMLOGv1"
    8       4     layout version (u32)
    12      4     kind (u32): 1 control, 2 scalar rings, 3 runtime info, 4 log records
    16      8     size in bytes (u64)
    24      8     session generation (u64): the incarnation of the session
                  that created it; a segment of an earlier incarnation that
                  happens to carry the same name is refused
    32      4     uid of the creator (u32)
    36      28    kind-specific (see the module that owns the kind)

Pages are reserved with posix_fallocate at creation: tmpfs allocates lazily,
so without it a full /dev/shm would kill a writer with SIGBUS on first touch
instead of failing here with ENOSPC and a readable message.

/dev/shm is writable by every user (with the sticky bit), so anyone can put a
file or a symbolic link under a name a session will want.  Segments are
opened with ``shm_open``, which glibc opens with O_NOFOLLOW, and created with
O_EXCL; an entry that is a link, or that another uid owns, is never used,
never removed and never followed: creating or attaching a segment under its
name fails with a SegmentError naming the path and its owner.  Only regular
files of this uid are removed, so a planted entry cannot make teardown fail.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import stat
import struct
from collections.abc import Callable

import posix_ipc

MAGIC = b"SHMLOGv1"
LAYOUT_VERSION = 2
HEADER = struct.Struct("<8sIIQQI")  # magic, version, kind, size, generation, uid
HEADER_SIZE = 64

KIND_CONTROL = 1
KIND_RINGS = 2
KIND_INFO = 3
KIND_RECORDS = 4

SHM_DIR = "/dev/shm"
TEMP_MARK = ".tmp"


class SegmentError(RuntimeError):
    """A segment could not be created or is not one shmlog can use."""


class ShmFullError(SegmentError, MemoryError):
    """/dev/shm has no room for a new segment."""


class SegmentNotReady(SegmentError):
    """The segment exists but its creator has not written its header yet."""


def _shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name.lstrip("/"))


def available_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Segment:
    """One mapped segment; ``buf`` is a writable memoryview over all of it."""

    __slots__ = ("buf", "fd", "generation", "kind", "mm", "name", "size")

    def __init__(self, name: str, fd: int, mm: mmap.mmap, kind: int, generation: int) -> None:
        self.name = name
        self.fd = fd
        self.mm = mm
        self.size = len(mm)
        self.kind = kind
        self.generation = generation
        self.buf = memoryview(mm)

    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        kind: int,
        generation: int,
        prepare: Callable[[Segment], None] | None = None,
    ) -> Segment:
        """Create ``name`` exclusively, reserve its pages and write the header.

        With ``prepare``, the segment is built under a temporary name, filled
        by ``prepare`` and only then linked under ``name``: nobody can ever
        attach to it half-made, even if this process dies on the way.

        Raises ``posix_ipc.ExistentialError`` when the name is taken and
        :class:`ShmFullError` when /dev/shm cannot hold ``size`` bytes.
        """
        if prepare is None:
            return cls._create(name, size, kind, generation)
        # Unguessable, so that nobody can take the temporary name first.
        temporary = f"{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            segment = cls._create(temporary, size, kind, generation)
        except posix_ipc.ExistentialError:
            raise SegmentError(f"cannot create {temporary}: {entry_problem(temporary)}") from None
        try:
            prepare(segment)
            try:
                os.link(_shm_path(temporary), _shm_path(name), follow_symlinks=False)
            except FileExistsError:
                raise posix_ipc.ExistentialError(f"{name} exists") from None
        except BaseException:
            segment.close()
            raise
        finally:
            unlink(temporary)
        segment.name = name
        return segment

    @classmethod
    def _create(cls, name: str, size: int, kind: int, generation: int) -> Segment:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
        fd = shm.fd
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    free = available_bytes()
                    where = f"{free} bytes are available" if free is not None else "free space unknown"
                    raise ShmFullError(
                        f"{SHM_DIR} is too small for shmlog segment {name}: it needs {size} "
                        f"bytes and {where}. Enlarge /dev/shm (for Docker: --shm-size) or "
                        f"lower the session's ring capacity."
                    ) from None
                raise
            mm = mmap.mmap(fd, size)
            HEADER.pack_into(mm, 0, MAGIC, LAYOUT_VERSION, kind, size, generation, os.getuid())
        except BaseException:
            _unlink_quietly(name)
            os.close(fd)
            raise
        return cls(name, fd, mm, kind, generation)

    @classmethod
    def attach(cls, name: str, kind: int, generation: int | None = None) -> Segment:
        """Map an existing segment after checking it is ours and of this layout."""
        try:
            shm = posix_ipc.SharedMemory(name)  # ExistentialError when absent
        except (posix_ipc.PermissionsError, OSError) as exc:
            problem = entry_problem(name)
            if problem is None:
                raise
            raise SegmentError(f"cannot attach shared memory {name}: {problem}") from exc
        fd = shm.fd
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid():
                raise SegmentError(
                    f"shared memory {name} belongs to uid {info.st_uid}, not to this "
                    f"process's uid {os.getuid()}; shmlog only attaches its own user's segments"
                )
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise SegmentError(
                    f"shared memory {name} has mode {stat.S_IMODE(info.st_mode):o}; shmlog "
                    f"segments are created 600, so this one was not made by shmlog"
                )
            if info.st_size < HEADER_SIZE:
                raise SegmentError(
                    f"shared memory {name} is {info.st_size} bytes, too small to be a shmlog "
                    f"segment"
                )
            mm = mmap.mmap(fd, info.st_size)
            magic, version, seg_kind, size, seg_generation, _uid = HEADER.unpack_from(mm, 0)
            problem = None
            if magic == bytes(len(MAGIC)):
                mm.close()
                raise SegmentNotReady(
                    f"shared memory {name} has no header: the process creating it died "
                    f"before writing one. Remove it with 'shmlog clean'."
                )
            if magic != MAGIC:
                problem = f"its header starts {magic!r}, not {MAGIC!r}"
            elif version != LAYOUT_VERSION:
                problem = f"it has layout version {version}, this shmlog reads {LAYOUT_VERSION}"
            elif seg_kind != kind:
                problem = f"it is of kind {seg_kind}, expected {kind}"
            elif size != info.st_size:
                problem = f"its header says {size} bytes but it is {info.st_size}"
            elif generation is not None and seg_generation != generation:
                problem = "it belongs to an earlier session of the same name"
            if problem:
                mm.close()
                raise SegmentError(f"shared memory {name} is not a usable shmlog segment: {problem}")
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd, mm, kind, seg_generation)

    def close(self) -> None:
        """Unmap; views still exported elsewhere keep the mapping alive until freed."""
        if self.fd < 0:
            return
        try:
            self.buf.release()
        except BufferError:
            pass
        try:
            self.mm.close()
        except BufferError:
            # A numpy array still looks into the mapping; the memory stays
            # valid and is freed with the last view.
            pass
        os.close(self.fd)
        self.fd = -1


def _owned(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()


def entry_problem(name: str) -> str | None:
    """Why the entry at ``name`` is not this user's to use or remove; None if it is (or is absent)."""
    path = _shm_path(name)
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
        info = os.lstat(_shm_path(name))
    except OSError:
        return False
    if not _owned(info):
        return False
    try:
        posix_ipc.unlink_shared_memory(name)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        return False
    return True


def _unlink_quietly(name: str) -> None:
    try:
        unlink(name)
    except (posix_ipc.Error, OSError):
        pass


def being_created(entry: str) -> bool:
    """Whether ``entry`` is a segment a live process is still building (see create)."""
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


def read_u64(buf: memoryview, at: int) -> int:
    """One aligned 8-byte load (a cast view, so never a byte-by-byte copy)."""
    view = buf[at : at + 8].cast("Q")
    try:
        return view[0]
    finally:
        view.release()


def write_u64(buf: memoryview, at: int, value: int) -> None:
    """One aligned 8-byte store: a concurrent reader sees the old or the new value."""
    view = buf[at : at + 8].cast("Q")
    try:
        view[0] = value
    finally:
        view.release()

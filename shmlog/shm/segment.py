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

Segments are opened with ``shm_open``, which glibc opens with O_NOFOLLOW,
and created with O_EXCL: an entry someone else put under a segment's name (a
link, another user's file: ``shmlog.shm.names``) is never used, never
followed, and refused with a SegmentError naming the path and its owner.

A mapped segment keeps no file descriptor (below), except the
control segment, whose descriptor carries the session lock: a process holds
one descriptor per session however many keys and writers it has.  Running
out of descriptors anyway (the program's own) raises
:class:`DescriptorLimitError`, which names RLIMIT_NOFILE and the count.

Mapping without a descriptor (:class:`Mapping`): ``mmap.mmap(fd, size)``
keeps a duplicate of the descriptor it maps for as long as the mapping
lives, which would make a session of many segments run into RLIMIT_NOFILE
at a few thousand keys.  The pages need no descriptor once mapped, so none
is kept: on Python 3.13 and later ``mmap.mmap(fd, size, trackfd=False)``
keeps no copy; before, the pages are mapped with libc's ``mmap`` through
ctypes and ``munmap`` runs when the last view of them is freed, so a view (a
numpy array, a ring writer) that outlives ``Segment.close`` keeps reading
valid memory, as with ``mmap``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import resource
import secrets
import stat
import struct
import sys
import weakref
from collections.abc import Callable
from typing import Any

import posix_ipc

from ..errors import DescriptorLimitError, SegmentError, SegmentNotReady, ShmFullError
from .names import SHM_DIR, TEMP_MARK, entry_problem, shm_path, unlink

MAGIC = b"SHMLOGv1"
LAYOUT_VERSION = 3
HEADER = struct.Struct("<8sIIQQI")  # magic, version, kind, size, generation, uid
HEADER_SIZE = 64

KIND_CONTROL = 1
KIND_RINGS = 2
KIND_INFO = 3
KIND_RECORDS = 4


def available_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Segment:
    """One mapped segment; ``buf`` is a writable memoryview over all of it.

    ``fd`` is the segment's descriptor for the control segment (its lock), -1
    for every other kind, whose descriptor is closed once mapped.
    """

    __slots__ = ("_mapping", "buf", "fd", "generation", "kind", "name", "size", "words")

    def __init__(self, name: str, fd: int, mapping: Mapping, kind: int, generation: int) -> None:
        self.name = name
        self._mapping: Mapping | None = mapping
        self.size = mapping.size
        self.kind = kind
        self.generation = generation
        self.buf = mapping.buf
        # The header as u64 words, kept: readers look at its counts often
        # (one aligned load each, no view made per look).
        self.words = mapping.buf[:HEADER_SIZE].cast("Q")
        if kind != KIND_CONTROL:
            os.close(fd)
            fd = -1
        self.fd = fd

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
                os.link(shm_path(temporary), shm_path(name), follow_symlinks=False)
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
        shm = _shm_open(name, posix_ipc.O_CREX)
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
                        f"remove stale sessions with 'shmlog clean'."
                    ) from None
                raise
            mapping = Mapping(fd, size)
            HEADER.pack_into(
                mapping.buf, 0, MAGIC, LAYOUT_VERSION, kind, size, generation, os.getuid()
            )
        except BaseException:
            _unlink_quietly(name)
            os.close(fd)
            raise
        return cls(name, fd, mapping, kind, generation)

    @classmethod
    def attach(cls, name: str, kind: int, generation: int | None = None) -> Segment:
        """Map an existing segment after checking it is ours and of this layout."""
        try:
            shm = _shm_open(name, 0)  # ExistentialError when absent
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
            mapping = Mapping(fd, info.st_size)
            magic, version, seg_kind, size, seg_generation, _uid = HEADER.unpack_from(
                mapping.buf, 0
            )
            problem = None
            if magic == bytes(len(MAGIC)):
                mapping.close()
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
                mapping.close()
                raise SegmentError(f"shared memory {name} is not a usable shmlog segment: {problem}")
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd, mapping, kind, seg_generation)

    def close(self) -> None:
        """Unmap; views still exported elsewhere keep the mapping alive until freed."""
        mapping, self._mapping = self._mapping, None
        if mapping is None:
            return
        self.words.release()
        mapping.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _shm_open(name: str, flags: int) -> posix_ipc.SharedMemory:
    """``shm_open``, with an error saying what to do when descriptors have run out."""
    try:
        return posix_ipc.SharedMemory(name, flags, mode=0o600)
    except posix_ipc.Error:
        raise
    except OSError as exc:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # posix_ipc reports EMFILE without an errno: count instead.
        count = open_descriptors(soft)
        if exc.errno not in (errno.EMFILE, errno.ENFILE) and count < soft:
            raise
        if count < soft:
            where = "the system-wide limit on open files (fs.file-max) is reached"
        else:
            where = f"its RLIMIT_NOFILE soft limit is {soft} (hard limit {hard})"
        raise DescriptorLimitError(
            f"cannot open shared memory {name}: this process has {count} file descriptors "
            f"open and {where}. shmlog keeps one per session whatever its keys and writers, "
            f"so the others are the program's own: raise the limit (ulimit -n, or "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ...) in the program) or close "
            f"descriptors it no longer needs"
        ) from None


def open_descriptors(limit: int) -> int:
    """How many file descriptors this process has open (below ``limit``)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # the listing's own
    except OSError:  # no descriptor left to list with: probe them
        count = 0
        for fd in range(min(limit, 1 << 20)):
            try:
                os.fstat(fd)
            except OSError:
                continue
            count += 1
        return count


def _unlink_quietly(name: str) -> None:
    try:
        unlink(name)
    except (posix_ipc.Error, OSError):
        pass


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


_TRACKFD = sys.version_info >= (3, 13)

if not _TRACKFD:
    _libc = ctypes.CDLL(None, use_errno=True)
    _mmap = _libc.mmap
    _mmap.restype = ctypes.c_void_p
    _mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_long,
    ]
    _munmap = _libc.munmap
    _munmap.restype = ctypes.c_int
    _munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _MAP_FAILED = ctypes.c_void_p(-1).value


class Mapping:
    """Shared pages mapped from a descriptor that may be closed right after.

    ``buf`` is a writable byte memoryview over all of them.  :meth:`close`
    gives them up: at once when nothing else views them, otherwise when the
    last view is freed.
    """

    __slots__ = ("_pages", "buf", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self._pages: Any
        if _TRACKFD:
            self._pages = mmap.mmap(fd, size, trackfd=False)  # type: ignore[call-arg]
        else:
            self._pages = _map_with_libc(fd, size)
        self.buf = memoryview(self._pages).cast("B")

    def close(self) -> None:
        try:
            self.buf.release()
        except BufferError:  # something still reads through this very view
            pass
        pages, self._pages = self._pages, None
        if isinstance(pages, mmap.mmap):
            try:
                pages.close()
            except BufferError:
                # A numpy array still looks into the mapping; the memory stays
                # valid and is freed with the last view.
                pass
        # A ctypes array is unmapped by its finalizer once nothing refers to it.


def _map_with_libc(fd: int, size: int) -> ctypes.Array:
    address = _mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, f"mmap of {size} bytes failed: {os.strerror(code)}")
    pages = (ctypes.c_char * size).from_address(address)
    unmap = weakref.finalize(pages, _munmap, address, size)
    # At interpreter exit the memory goes with the process: unmapping it
    # earlier, under a late atexit hook still logging, would crash it.
    unmap.atexit = False
    return pages

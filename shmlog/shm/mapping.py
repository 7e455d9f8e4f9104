"""Mapping shared memory without keeping a file descriptor for the mapping.

``mmap.mmap(fd, size)`` duplicates the descriptor it maps and keeps the copy
for as long as the mapping lives (for ``size()`` and ``resize()``), so a
segment would hold two descriptors: the one ``shm_open`` returned and that
copy.  A session of many segments would then run into RLIMIT_NOFILE (1,024
descriptors by default) at a few thousand keys.  The pages need no
descriptor once mapped, so none is kept:

* on Python 3.13 and later, ``mmap.mmap(fd, size, trackfd=False)`` keeps no
  copy;
* before, the pages are mapped with libc's ``mmap`` through ctypes and read
  through a ctypes array; ``munmap`` runs when the last view of that array is
  freed, the moment ``mmap.close()`` would have stopped raising BufferError,
  so a view (a numpy array, a ring writer) that outlives ``Segment.close``
  keeps reading valid memory, as with ``mmap``.

The caller then closes its own descriptor, except for the control segment,
whose descriptor carries the session lock (``flock``).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import weakref
from typing import Any

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

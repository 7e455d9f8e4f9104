"""The log writer's commits: what it has written for good, so that a successor repeats nothing.

The writer reads records ahead of the rings' ``consumed`` positions, writes a
batch of them into its files, flushes the files, and only then commits: one
record (``shmlog.wire.Commit``) holding, for every file it writes, the
inode and length that hold the batch, and for every record ring how far the
batch read (and how many of its drops were reported).  After storing the
commit it moves each ring's ``consumed`` there.

A writer killed at any instant leaves either the previous commit or the new
one whole: commits go in turn to two runtime-info slots
(``shmlog.wire.COMMIT_KEYS``) and the successor takes the one with the
higher sequence number.  Before writing anything, the successor
(:func:`recover`)

* truncates each committed file back to its committed length (what the dead
  writer wrote after its last commit goes; the same records follow again);
  a file whose inode changed was started after the commit (a rollover) and
  is emptied;
* moves every ring's ``consumed`` and its own read position to the commit.

So every record is written once, whenever the writer dies.  Files that a
commit names are opened in append mode by the successor, never truncated
again.  TensorBoard event files are not covered: a successor starts a new
event file, which may repeat the steps written after the last commit.
"""

from __future__ import annotations

import os
import pickle

from ..shm import codec
from ..shm.record_rings import RecordConsumer
from ..shm.session import SessionSegments
from ..wire import COMMIT_KEYS, Commit


class CommitLog:
    """Reads and stores a session's writer commits."""

    def __init__(self, segments: SessionSegments) -> None:
        self._segments = segments

    def load(self) -> Commit | None:
        """The newest whole commit, None before the first one."""
        best = None
        for key in COMMIT_KEYS:
            raw = self._segments.info_get(key)
            if raw is None:
                continue
            try:
                commit = Commit.from_data(codec.decode(raw))
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError):
                continue  # left torn by a writer killed while storing it
            if best is None or commit.seq > best.seq:
                best = commit
        return best

    def store(self, commit: Commit) -> None:
        payload = codec.encode("log writer commit", commit.as_data())
        self._segments.info_set(COMMIT_KEYS[commit.seq % 2], payload)


def recover(commit: Commit | None, consumers: list[RecordConsumer]) -> None:
    """Undo what a dead writer wrote after ``commit``; continue every ring from it."""
    rings = {} if commit is None else commit.rings
    for consumer in consumers:
        committed = rings.get(consumer.ident)
        # The ring's own positions are never ahead of its last commit, but can
        # be behind it: the writer died after storing the commit.
        shared_consumed = consumer.consumed_in_ring()
        consumed, reported = committed if committed is not None else (shared_consumed, 0)
        consumer.rewind(max(consumed, shared_consumed),
                        max(reported, consumer.reported_in_ring()))
    if commit is None:
        return
    for path, (inode, length) in commit.files.items():
        restore(path, inode, length)


def restore(path: str, inode: int, length: int) -> None:
    """Bring ``path`` back to the ``length`` committed for ``inode``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone (a rollover, or removed): nothing to undo
    try:
        info = os.fstat(fd)
        if info.st_ino != inode:
            os.ftruncate(fd, 0)  # started after the commit: all of it follows again
        elif info.st_size > length:
            os.ftruncate(fd, length)
    finally:
        os.close(fd)

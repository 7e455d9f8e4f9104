"""A session: the set of shared segments that one training run's processes share.

Segments of session ``S`` of user ``U`` are named ``/shmlog-U-S@<part>``:
``@ctl`` (members, writers, options: ``shmlog.shm.control``), ``@r0``,
``@r1``... (scalar rings: ``shmlog.shm.ring``), ``@i0``... (runtime info:
``shmlog.shm.info``) and ``@l0``... (log record rings:
``shmlog.shm.records``).  Ring, info and record segments are added as they
fill up, so there is no fixed limit on keys or writers' rings.  The log
writer's lock file (``@writer.lock``) shares the prefix and is removed with
the segments.

This layer moves bytes and numbers.  It knows keys only as strings and
processes only as (pid, rank, worker, label); what a key means, and how a
hub name is folded into it, is decided above it.

Fork: a child inherits the mappings (MAP_SHARED) and every Python object,
including the parent's writer identity.  An ``os.register_at_fork`` hook
drops the child's copy of that identity and of the ring writers before the
child runs any code, so it claims its own writer slot and its own rings on
its first update and never appends to its parent's rings.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import posix_ipc

from . import arena, info, records
from .control import (
    CONTROL_BYTES,
    STATE_CLOSED,
    STATE_READY,
    Control,
    Writer,
    is_alive,
    process_start,
)
from .records import RecordConsumer, RecordProducer
from .ring import (
    RingReader,
    RingWriter,
    encode_key,
    format_ring,
    read_header,
    ring_bytes,
)
from .segment import (
    KIND_CONTROL,
    KIND_INFO,
    KIND_RECORDS,
    KIND_RINGS,
    Segment,
    SegmentError,
    list_names,
    unlink,
)

DEFAULT_CAPACITY = 4096
DEFAULT_SEGMENT_BYTES = 1 << 20
DEFAULT_INFO_SEGMENT_BYTES = 256 << 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OPEN_TIMEOUT = 10.0


class SessionError(RuntimeError):
    """A session could not be opened, or was used after it closed."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"session name {name!r}: expected 1-64 characters of letters, digits, '_', '.' "
            f"or '-', starting with a letter or digit"
        )
    return name


def prefix(name: str, uid: int | None = None) -> str:
    """The name prefix (no leading slash) shared by a session's segments."""
    return f"shmlog-{os.getuid() if uid is None else uid}-{name}@"


def check_capacity(capacity: Any, what: str) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"{what}: expected an int >= 1, got {capacity!r}")
    if capacity > 1 << 26:
        raise ValueError(f"{what}: {capacity} records is more than the 67108864 a ring can hold")
    return capacity


# The segments that grow, by kind: name part and the control header field
# that counts the published ones.
_PARTS = {
    KIND_RINGS: ("r", "ring_segments"),
    KIND_INFO: ("i", "info_segments"),
    KIND_RECORDS: ("l", "record_segments"),
}

_open_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


class Session:
    """One process's handle on a session."""

    def __init__(self, name: str, control: Control, member: tuple[int, int] | None) -> None:
        self.name = name
        self.control = control
        self.generation = control.segment.generation
        self._member = member
        self._pid = os.getpid()
        self._prefix = "/" + prefix(name)
        self._lock = threading.RLock()
        self.closed = False
        # Whether this handle's open() created the session (it was joined otherwise).
        self.created = False
        self.identity: Callable[[], tuple[int, int, str]] = _default_identity
        self._init_process_state()
        _open_sessions.add(self)

    def _init_process_state(self) -> None:
        # Segments of each growing kind, in index order, and how far the
        # entries of each have been walked: (entries seen, next offset).
        self._segments: dict[int, list[Segment]] = {k: [] for k in _PARTS}
        self._walked: dict[int, list[tuple[int, int]]] = {k: [] for k in _PARTS}
        self._ring_segments = self._segments[KIND_RINGS]
        self._info_segments = self._segments[KIND_INFO]
        self._ring_views: list[tuple[memoryview, memoryview]] = []
        self._ring_walk = self._walked[KIND_RINGS]
        self._info_walk = self._walked[KIND_INFO]
        self._records: list[RecordConsumer] = []
        self._producer: RecordProducer | None = None
        self._readers: dict[str, list[RingReader]] = {}
        # Writer identity is per thread: a ring has exactly one writer, and two
        # threads appending to one ring would interleave their stores.
        self._local = threading.local()
        self._info_index: dict[str, tuple[int, int]] = {}
        # Per-process caches of other layers (a hub's key -> RingWriter) that
        # must be emptied in a forked child.
        self._fork_caches: list[dict] = []

    def register_fork_cache(self, cache: dict) -> None:
        """Empty ``cache`` in a forked child, and when the session closes."""
        with self._lock:
            self._fork_caches.append(cache)

    # -- opening and closing ---------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        member: bool,
        create: bool,
        options: dict[str, Any] | None = None,
    ) -> Session:
        """Create or join ``name``.

        ``member`` processes keep the session alive; ``create`` allows
        creating it (and replacing a stale one whose members all died).
        """
        check_name(name)
        ctl_name = "/" + prefix(name) + "ctl"
        deadline = time.monotonic() + _OPEN_TIMEOUT
        me = (os.getpid(), process_start(os.getpid()) or 0)

        def prepare(segment: Segment) -> None:
            # Everything a joiner reads is in place before the name exists.
            fresh = Control(segment)
            fresh.write_config(options or {})
            fresh.write_state(state=STATE_READY, creator=me[0], created_ns=time.time_ns())
            if member:
                fresh.add_member(*me)

        while True:
            if time.monotonic() > deadline:
                raise SessionError(f"timed out opening shmlog session {name!r}")
            segment, created = _create_or_attach(ctl_name, create, name, prepare)
            if segment is None:
                time.sleep(0.001)
                continue
            control = Control(segment)
            if created:
                session = cls(name, control, me if member else None)
                session.created = True
                return session
            stale = False
            try:
                with control:
                    state = control.read_state().state
                    if state == STATE_CLOSED and _still_named(segment):
                        # Its last member died between closing and unlinking
                        # it (it would hold this lock otherwise): finish that.
                        _destroy(control, name)
                    # A closed session is being unlinked by its last member: try again.
                    if state == STATE_READY:
                        if control.prune_members() > 0:
                            if member:
                                control.add_member(*me)
                            return cls(name, control, me if member else None)
                        if create:
                            _destroy(control, name)  # stale: replace it
                        else:
                            stale = True
            except BaseException:
                segment.close()
                raise
            # Closed only now: leaving ``with control`` unlocks its descriptor.
            segment.close()
            if stale:
                raise SessionError(
                    f"shmlog session {name!r} is stale: every process that joined it "
                    f"has exited. Run 'shmlog clean' or call shmlog.init({name!r})."
                )

    def close(self) -> None:
        """Leave the session; the last member to leave removes its segments."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            _open_sessions.discard(self)
            if self._pid == os.getpid() and self._member is not None:
                try:
                    with self.control:
                        self.control.remove_member(*self._member)
                        if self.control.prune_members() == 0:
                            _destroy(self.control, self.name)
                except (OSError, ValueError):
                    pass
            self._unmap()

    def _unmap(self) -> None:
        for cache in self._fork_caches:
            cache.clear()
        self._readers = {}
        if self._producer is not None:
            self._producer.release()
            self._producer = None
        for d, q in self._ring_views:
            for view in (d, q):
                try:
                    view.release()
                except BufferError:
                    pass
        for segments in self._segments.values():
            for segment in segments:
                segment.close()
        self.control.segment.close()
        self._ring_views = []

    def _check_open(self) -> None:
        if self.closed:
            raise SessionError(f"shmlog session {self.name!r} is closed")

    def after_fork_in_child(self) -> None:
        """Forget the parent's process-specific state (see the module docstring)."""
        self._lock = threading.RLock()
        self._member = None
        self._pid = os.getpid()
        try:
            # A fresh descriptor: flock on the inherited one would share the
            # parent's lock instead of competing with it.
            fresh = Segment.attach(self.control.segment.name, KIND_CONTROL, self.generation)
        except (posix_ipc.Error, SegmentError, OSError):
            self.closed = True
            for cache in self._fork_caches:
                cache.clear()
            return
        old = self.control.segment
        self.control = Control(fresh)
        os.close(old.fd)
        old.fd = -1
        # Mappings stay valid in the child; only the writer identity is reset,
        # with everything that belongs to it (rings and the record ring).
        self._local = threading.local()
        self._producer = None
        for cache in self._fork_caches:
            cache.clear()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this handle's lock, then the session lock, across several calls.

        Every method takes them in this order; a caller that took the session
        lock alone and then called a method would deadlock against a thread
        of this process holding this handle's lock and waiting for the
        session lock.
        """
        with self._lock, self.control:
            yield

    # -- options -----------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        # Under the lock: update_options rewrites the JSON and its length in
        # two stores, and a reader between them would decode half of it.
        with self.control:
            return self.control.read_config()

    def update_options(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the session's options (JSON data) and return them."""
        with self.control:
            config = self.control.read_config()
            config.update(changes)
            self.control.write_config(config)
            return config

    # -- writing scalars -----------------------------------------------------------

    def writer_slot(self) -> int:
        """This thread's writer slot, claimed on first use."""
        if self._pid != os.getpid():
            self.after_fork_in_child()
        slot = getattr(self._local, "slot", None)
        if slot is None:
            self._check_open()
            rank, worker, label = self.identity()
            if threading.current_thread() is not threading.main_thread():
                label = f"{label}/thread{threading.get_native_id()}"
            pid = os.getpid()
            with self.control:
                slot, _adopted = self.control.claim_writer(
                    pid, process_start(pid) or 0, rank, worker, label, threading.get_native_id()
                )
            self._local.slot = slot
        return slot

    def ring_writer(self, key: str, capacity: int) -> RingWriter:
        """This process's ring for ``key``, created (or taken over) on first use.

        ``capacity`` applies only when the ring is created here.
        """
        with self._lock:
            slot = self.writer_slot()
            raw_key = encode_key(key)
            with self.control:
                self._refresh_rings()
                for reader in self._readers.get(key, ()):
                    if reader.writer == slot:
                        index = self._segment_of(reader)
                        d, q = self._ring_views[index]
                        writer = RingWriter(d, q, reader.offset)
                        break
                else:
                    writer = self._new_ring(raw_key, slot, capacity)
            return writer

    def _segment_of(self, reader: RingReader) -> int:
        for index, (d, _q) in enumerate(self._ring_views):
            if reader._d is d:
                return index
        raise AssertionError("ring reader without a segment")

    def _new_ring(self, raw_key: bytes, slot: int, capacity: int) -> RingWriter:
        check_capacity(capacity, "ring capacity")
        size = ring_bytes(capacity)
        index = self._segment_with_room(KIND_RINGS, size)
        segment = self._ring_segments[index]
        offset = arena.reserve(segment, size)
        format_ring(segment.buf, offset, capacity, slot, raw_key)
        arena.publish(segment, offset, size)
        self._refresh_rings()
        d, q = self._ring_views[index]
        return RingWriter(d, q, offset)

    def _segment_with_room(self, kind: int, size: int) -> int:
        """Index of the first segment of ``kind`` with ``size`` bytes free (lock held).

        When none has, one is added: ``segment_bytes`` (the session's option)
        for rings and records, DEFAULT_INFO_SEGMENT_BYTES for runtime info, or
        more for an entry that would not fit.
        """
        for index, segment in enumerate(self._segments[kind]):
            if arena.free_bytes(segment) >= size:
                return index
        if kind == KIND_INFO:
            wanted = DEFAULT_INFO_SEGMENT_BYTES
        else:
            wanted = self.control.read_config().get("segment_bytes", DEFAULT_SEGMENT_BYTES)
        return self._add_segment(kind, max(wanted, size + 64))

    def _add_segment(self, kind: int, size: int) -> int:
        """Create the next segment of ``kind`` and publish it (lock held)."""
        state = self.control.read_state()
        if state.state == STATE_CLOSED:
            # Its last member removed the session while this process (a child
            # that only attached) kept its mappings: a segment created now
            # would belong to nobody and stay in /dev/shm for good.
            raise SessionError(
                f"shmlog session {self.name!r} was closed by its last member; no new keys "
                f"or runtime info can be added to it"
            )
        self._attach_new_segments(kind)
        part, field = _PARTS[kind]
        index = getattr(state, field)
        name = f"{self._prefix}{part}{index}"
        unlink(name)  # left by a process that died before publishing it
        segment = Segment.create(name, size, kind, self.generation)
        try:
            arena.init_arena(segment)
        finally:
            # It is attached again below like any published segment; this
            # descriptor would otherwise stay open (and keep the pages
            # reserved after the session is unlinked) for the process's life.
            segment.close()
        self.control.write_state(**{field: index + 1})
        self._attach_new_segments(kind)
        return index

    # -- reading scalars --------------------------------------------------------------

    def _attach_new_segments(self, kind: int) -> None:
        part, field = _PARTS[kind]
        want = getattr(self.control.read_state(), field)
        have = self._segments[kind]
        while len(have) < want:
            name = f"{self._prefix}{part}{len(have)}"
            try:
                segment = Segment.attach(name, kind, self.generation)
            except posix_ipc.ExistentialError:
                raise SessionError(
                    f"shmlog session {self.name!r} lost its segment {name}: the session was "
                    f"removed (shmlog clean --all?) while this process was using it"
                ) from None
            have.append(segment)
            self._walked[kind].append((0, 64))
            if kind == KIND_RINGS:
                self._ring_views.append(
                    (memoryview(segment.mm).cast("d"), memoryview(segment.mm).cast("q"))
                )

    def _refresh_rings(self) -> None:
        self._check_open()
        self._attach_new_segments(KIND_RINGS)
        for index, segment in enumerate(self._ring_segments):
            done, offset = self._ring_walk[index]
            if done == arena.published(segment):
                continue
            d, q = self._ring_views[index]
            for position, at in arena.walk(segment, offset, done):
                reader = RingReader(segment.buf, d, q, at)
                self._readers.setdefault(reader.key, []).append(reader)
                done, offset = position + 1, at + read_header(segment.buf, at).size
            self._ring_walk[index] = (done, offset)

    def readers(self, key: str) -> list[RingReader]:
        """Every ring of ``key`` (one per writer that ever wrote it)."""
        with self._lock:
            self._refresh_rings()
            return list(self._readers.get(key, ()))

    def scalar_keys(self) -> list[str]:
        with self._lock:
            self._refresh_rings()
            return list(self._readers)

    def writers(self) -> list[Writer]:
        return self.control.writers()

    def writer_labels(self) -> dict[int, str]:
        """A distinct readable label per writer slot."""
        labels: dict[int, str] = {}
        seen: set[str] = set()
        for w in self.control.writers():
            label = w.label or f"pid{w.pid}"
            if label in seen:
                label = f"{label}#{w.slot}"
            seen.add(label)
            labels[w.slot] = label
        return labels

    # -- runtime info ---------------------------------------------------------------

    def _refresh_info(self) -> None:
        self._check_open()
        self._attach_new_segments(KIND_INFO)
        for index, segment in enumerate(self._info_segments):
            done, offset = self._info_walk[index]
            if done == arena.published(segment):
                continue
            for position, at in arena.walk(segment, offset, done):
                self._info_index[info.entry_key(segment.buf, at)] = (index, at)
                done, offset = position + 1, at + arena.entry_size(segment, at)
            self._info_walk[index] = (done, offset)

    def info_get(self, key: str) -> bytes | None:
        """The stored bytes of ``key``, None when unset or removed."""
        with self._lock:
            for _ in range(3):
                self._refresh_info()
                where = self._info_index.get(key)
                if where is None:
                    return None
                state, payload = self._read_info(self._info_segments[where[0]], where[1])
                if state != info.MOVED:
                    return payload
            raise SessionError(f"runtime info {key!r} keeps moving; is a writer looping?")

    def _read_info(self, segment: Segment, offset: int) -> tuple[int, bytes | None]:
        state, payload = info.read(segment, offset)
        if state == info.BUSY:
            # Wait for the writer's lock; a rewrite still unfinished under it
            # was left by a writer that died (TORN: no value).
            with self.control:
                state, payload = info.read(segment, offset, locked=True)
        return state, payload

    def info_keys(self) -> list[str]:
        with self._lock:
            self._refresh_info()
            return [
                key
                for key, (index, offset) in self._info_index.items()
                if self._read_info(self._info_segments[index], offset)[0] == 0
            ]

    def info_set(self, key: str, payload: bytes | None) -> bytes | None:
        """Store ``payload`` under ``key`` (None removes it); returns the old bytes."""
        raw_key = encode_key(key)
        with self._lock, self.control:
            self._refresh_info()
            where = self._info_index.get(key)
            old = None
            if where is not None:
                segment = self._info_segments[where[0]]
                state, old = info.read(segment, where[1], locked=True)
                if payload is None:
                    if state in (0, info.TORN):
                        info.rewrite(segment.buf, where[1], None, info.REMOVED)
                    return old
                if info.capacity(segment.buf, where[1]) >= len(payload):
                    info.rewrite(segment.buf, where[1], payload)
                    return old
            elif payload is None:
                return None
            capacity = max(256, 2 * len(payload))
            size = info.entry_bytes(capacity)
            segment = self._info_segments[self._segment_with_room(KIND_INFO, size)]
            offset = arena.reserve(segment, size)
            info.format_entry(segment.buf, offset, raw_key, payload, capacity)
            arena.publish(segment, offset, size)
            if where is not None:
                info.rewrite(self._info_segments[where[0]].buf, where[1], None, info.MOVED)
            self._refresh_info()
            return old

    # -- inspection ---------------------------------------------------------------------

    def total_bytes(self) -> int:
        with self._lock:
            total = self.control.segment.size
            for kind, segments in self._segments.items():
                self._attach_new_segments(kind)
                total += sum(s.size for s in segments)
            return total

    # -- log records ----------------------------------------------------------------

    def record_producer(self, capacity: int) -> RecordProducer:
        """This process's record ring, created (or taken over) on first use."""
        producer = self._producer
        if producer is not None:
            # Every log record passes here: no lock, no system call.  A forked
            # child never sees its parent's producer (after_fork_in_child).
            return producer
        with self._lock:
            if self._pid != os.getpid():
                self.after_fork_in_child()
            if self._producer is not None:
                return self._producer
            slot = self.writer_slot()
            with self.control:
                for consumer, segment in self._refresh_records():
                    if consumer.writer == slot:
                        producer = RecordProducer(segment.buf, consumer.offset)
                        break
                else:
                    size = records.ring_bytes(capacity)
                    index = self._segment_with_room(KIND_RECORDS, size)
                    segment = self._segments[KIND_RECORDS][index]
                    offset = arena.reserve(segment, size)
                    records.format_ring(segment.buf, offset, capacity, slot)
                    arena.publish(segment, offset, size)
                    producer = RecordProducer(segment.buf, offset)
            self._producer = producer
            return producer

    def _refresh_records(self) -> list[tuple[RecordConsumer, Segment]]:
        self._check_open()
        self._attach_new_segments(KIND_RECORDS)
        for index, segment in enumerate(self._segments[KIND_RECORDS]):
            done, offset = self._walked[KIND_RECORDS][index]
            for position, at in arena.walk(segment, offset, done):
                consumer = RecordConsumer(segment.buf, at)
                consumer.segment_index = index
                self._records.append(consumer)
                done, offset = position + 1, at + arena.entry_size(segment, at)
            self._walked[KIND_RECORDS][index] = (done, offset)
        return [(c, self._segments[KIND_RECORDS][c.segment_index]) for c in self._records]

    def record_consumers(self) -> list[RecordConsumer]:
        """Every process's record ring (for the designated log writer)."""
        with self._lock:
            return [consumer for consumer, _ in self._refresh_records()]

    # -- the designated log writer ----------------------------------------------------

    @property
    def writer_pid(self) -> int:
        """Pid of the process writing log files now; 0 when there is none."""
        return self.control.read_state().writer_pid

    def set_writer_pid(self, pid: int) -> None:
        with self.control:
            self.control.write_state(writer_pid=pid)

    def live_members(self) -> int:
        return len(self.control.live_members())


def _default_identity() -> tuple[int, int, str]:
    return -1, -1, f"pid{os.getpid()}"


def _create_or_attach(
    ctl_name: str, create: bool, name: str, prepare: Callable[[Segment], None]
) -> tuple[Segment | None, bool]:
    if create:
        try:
            segment = Segment.create(
                ctl_name, CONTROL_BYTES, KIND_CONTROL, secrets.randbits(63), prepare
            )
            return segment, True
        except posix_ipc.ExistentialError:
            pass
    try:
        return Segment.attach(ctl_name, KIND_CONTROL), False
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
        return os.stat(f"/dev/shm/{segment.name.lstrip('/')}").st_ino == os.fstat(
            segment.fd
        ).st_ino
    except OSError:
        return False


def _destroy(control: Control, name: str) -> None:
    """Mark the session closed and unlink all its segments (lock held)."""
    control.write_state(state=STATE_CLOSED)
    ctl = "/" + prefix(name) + "ctl"
    for segment_name in list_names(prefix(name)):
        if segment_name != ctl:
            unlink(segment_name)
    unlink(ctl)


def destroy(name: str, stale_only: bool = False) -> bool:
    """Remove session ``name`` whatever its state; False when it did not exist.

    ``stale_only``: only when no member is alive, as seen under the session
    lock (a stale session that ``shmlog.init`` replaced meanwhile stays).
    """
    check_name(name)
    ctl_name = "/" + prefix(name) + "ctl"
    try:
        segment = Segment.attach(ctl_name, KIND_CONTROL)
    except posix_ipc.ExistentialError:
        leftovers = list_names(prefix(name))
        for segment_name in leftovers:
            unlink(segment_name)
        return bool(leftovers)
    except SegmentError:
        for segment_name in list_names(prefix(name)):
            unlink(segment_name)
        return True
    control = Control(segment)
    try:
        with control:
            if stale_only and control.read_state().state == STATE_READY and (
                control.live_members()
            ):
                return False
            _destroy(control, name)
    finally:
        segment.close()
    return True


def _after_fork_in_child() -> None:
    for session in list(_open_sessions):
        if not session.closed:
            session.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = [
    "DEFAULT_CAPACITY",
    "STATE_READY",
    "Session",
    "SessionError",
    "check_name",
    "destroy",
    "is_alive",
    "prefix",
]

"""Scalars that live on an accelerator, logged without waiting for it.

Reading a CUDA tensor on the host (``.item()``, ``float()``) blocks until the
device has run everything queued before it.  A scalar given to the logging
calls as such a tensor is therefore *staged* instead: its value is copied
asynchronously into a slot of a pinned host staging pool, on the tensor's
current stream, and an event is recorded after the copy.  Once the event has
completed the slot holds the value, which then *lands*: it is appended to the
key's storage (ring, totals, min and max) like any float.

* Values land in the order they were logged in this process (a single FIFO,
  so per key and thread a fortiori).  A float logged for a key that still
  has staged values waits behind them in the same queue.
* :meth:`Deferred.land_ready` lands what is complete without blocking; it runs
  at every later deferred update and from a background thread.
* :meth:`Deferred.settle` is the reader's wait: it lands everything logged
  before the call, waiting (once, on the newest event: a stream runs its
  work in order) only for values logged before it.
* The pool is bounded (``SHMLOG_DEVICE_SLOTS``, read by
  ``shmlog.stats.device_backend``): when it is full, the oldest staged value
  is waited for, which is counted and reported once.
* A count given as a device tensor is staged too; a count that turns out not
  to be finite and >= 0 cannot be refused any more, so that update is
  dropped, counted and reported once.

Device access goes through a small interface
(:class:`~shmlog.stats.device_backend.Backend`):
``shmlog.stats.device_torch.TorchCuda`` for PyTorch's CUDA tensors, and
``shmlog.stats.device_fake`` for tests without a GPU.  torch is never
imported here: a value can only be a CUDA tensor when the program has
imported torch and initialised CUDA itself, so shmlog never creates a CUDA
context (``torch.cuda.is_initialized()`` is False in forked children of a
CUDA process, whose tensors are then read as before).  After a fork the
child drops its parent's staged values without touching the device.
"""

from __future__ import annotations

import collections
import ctypes
import threading
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import InvalidValue
from .device_backend import ENV_SLOTS, slots_from_env
from .device_torch import TorchCuda
from .values import to_count, to_float


class Staged:
    """One value on its way from the device: its pool slot and completion event."""

    __slots__ = ("backend", "event", "slot")

    def __init__(self, backend: Any, slot: int, event: Any) -> None:
        self.backend = backend
        self.slot = slot
        self.event = event


class DeferredSink:
    """A key's storage while it takes deferred values; everything else passes through.

    ``append`` keeps the logging order: while values of this sink are staged,
    a float waits behind them in the queue.
    """

    __slots__ = ("inner", "key", "pending")

    def __init__(self, inner: Any, key: str) -> None:
        self.inner = inner
        self.key = key
        self.pending = 0  # entries of this sink in the queue

    def append(self, value: float, count: float) -> None:
        if self.pending:
            DEFERRED.enqueue(self, value, count)
        else:
            self.inner.append(value, count)

    def __getattr__(self, name: str) -> Any:
        if name in DeferredSink.__slots__:  # not set yet (a copy being built)
            raise AttributeError(name)
        return getattr(self.inner, name)


class _Entry:
    __slots__ = ("count", "key", "seq", "sink", "value")

    def __init__(self, seq: int, sink: DeferredSink, key: str, value: Any, count: Any) -> None:
        self.seq = seq
        self.sink = sink
        self.key = key
        self.value = value
        self.count = count


class Deferred:
    """This process's staged values (see the module docstring)."""

    def __init__(self) -> None:
        self.backends: list[Any] = [TorchCuda()]
        self.slots: int | None = None  # None: SHMLOG_DEVICE_SLOTS, read at the first use
        # Called with a message the first time something is worth saying.
        self.report: Callable[[str], None] = _warn
        # Called (outside the lock) when the queue goes from empty to non-empty.
        self.on_pending: Callable[[], None] = lambda: None
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.has_pending = threading.Condition(self.lock)
        self.queue: collections.deque[_Entry] = collections.deque()
        self._pools: dict[int, Any] = {}  # id(backend) -> pool
        self._free: dict[int, list[int]] = {}
        self._seq = 0
        self.full_waits = 0
        self.reader_waits = 0
        self.dropped = 0
        self._said: set[str] = set()
        self._to_say: list[str] = []  # said once the lock is released

    # -- what is deferred --------------------------------------------------------------------

    def backend_of(self, value: Any) -> Any:
        """The backend owning ``value`` (a device value), else None.  Cheap for plain numbers."""
        if type(value) in (float, int):
            return None
        for backend in self.backends:
            if backend.owns(value):
                return backend
        return None

    def add_backend(self, backend: Any) -> None:
        """Serve ``backend``'s values, before those of the backends already there."""
        with self.lock:
            self.backends.insert(0, backend)

    def remove_backend(self, backend: Any) -> None:
        """Stop serving ``backend`` once the values staged so far have landed."""
        self.settle()
        with self.lock:
            self.backends.remove(backend)
            self._pools.pop(id(backend), None)
            self._free.pop(id(backend), None)

    def configure(self, slots: int) -> None:
        """Use a pool of ``slots`` slots from now on (staged values land first)."""
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 2:
            raise InvalidValue(f"device staging slots: expected an int >= 2, got {slots!r}")
        self.settle()
        with self.lock:
            self.slots = slots
            self._pools.clear()
            self._free.clear()

    # -- logging ------------------------------------------------------------------------------

    def validate(self, value: Any, key: str | None, what: str = "value") -> Any:
        """A device value checked from its metadata (returned as it is), else the float."""
        backend = self.backend_of(value)
        if backend is not None:
            backend.check(value, key, what)
            return value
        return to_count(value, key) if what == "count" else to_float(value, key, what)

    def submit(self, sink_of: Callable[[], DeferredSink], key: str, value: Any,
               count: Any) -> None:
        """Log ``value`` (weighted by ``count``) for the sink ``sink_of()`` gives.

        Either may be a device value; both are validated before the sink is
        asked for, so a refused update leaves no trace.
        """
        value = self.validate(value, key, "value")
        count = self.validate(count, key, "count")
        value_backend, count_backend = self.backend_of(value), self.backend_of(count)
        sink = sink_of()
        with self.lock:
            self._land_ready_locked()
            if value_backend is not None:
                value = self._stage_locked(value_backend, value)
            if count_backend is not None:
                count = self._stage_locked(count_backend, count)
            notify = not self.queue
            self._seq += 1
            self.queue.append(_Entry(self._seq, sink, key, value, count))
            sink.pending += 1
        self._speak()
        if notify:
            self.on_pending()

    def enqueue(self, sink: DeferredSink, value: float, count: float) -> None:
        """A plain value for ``sink``: behind its staged values, or at once if none is left."""
        with self.lock:
            if not sink.pending:
                sink.inner.append(value, count)
                return
            self._seq += 1
            self.queue.append(_Entry(self._seq, sink, sink.key, value, count))
            sink.pending += 1

    def _stage_locked(self, backend: Any, value: Any) -> Staged:
        ident = id(backend)
        free = self._free.get(ident)
        if free is None:
            if self.slots is None:
                self.slots = slots_from_env()
            self._pools[ident] = backend.allocate(self.slots)
            free = self._free[ident] = list(range(self.slots - 1, -1, -1))
        while not free:
            # Full: wait for the oldest staged value (rare; said once).
            self.full_waits += 1
            self._say_once("full", (
                f"shmlog: all {self.slots} slots of the staging pool for device values were "
                f"taken, so logging waited for the device to finish the oldest logged value "
                f"(counted in device_values_stats()['full_waits']); raise the pool with "
                f"shmlog.set_device_slots() or {ENV_SLOTS}, or read the values (a logging "
                f"step) more often"))
            self._land_locked(self.queue.popleft(), wait=True)
        slot = free.pop()
        return Staged(backend, slot, backend.stage(self._pools[ident], slot, value))

    # -- landing ------------------------------------------------------------------------------

    def land_ready(self) -> int:
        """Land every value at the head of the queue whose copy completed; never blocks."""
        if not self.queue:
            return 0
        with self.lock:
            landed = self._land_ready_locked()
        self._speak()
        return landed

    def _land_ready_locked(self) -> int:
        queue, landed = self.queue, 0
        while queue and self._ready(queue[0]):
            self._land_locked(queue.popleft(), wait=False)
            landed += 1
        return landed

    @staticmethod
    def _ready(entry: _Entry) -> bool:
        for part in (entry.value, entry.count):
            if type(part) is Staged and not part.backend.ready(part.event):
                return False
        return True

    def _land_locked(self, entry: _Entry, wait: bool) -> None:
        value = self._take(entry.value, wait)
        count = self._take(entry.count, wait)
        sink = entry.sink
        try:
            if type(entry.count) is Staged:
                count = to_count(count, entry.key)
            sink.inner.append(value, count)
        except (TypeError, ValueError) as exc:
            self.dropped += 1
            self._say_once(f"dropped:{entry.key}", (
                f"shmlog: an update of {entry.key!r} was dropped when its values came back "
                f"from the device: {exc} (counted in device_values_stats()['dropped'])"))
        finally:
            sink.pending -= 1

    def _take(self, part: Any, wait: bool) -> Any:
        if type(part) is not Staged:
            return part
        backend = part.backend
        if wait and not backend.ready(part.event):
            backend.wait(part.event)
        pool = self._pools.get(id(backend))
        result = backend.read(pool, part.slot)
        self._free[id(backend)].append(part.slot)
        return result

    # -- readers ------------------------------------------------------------------------------

    def settle(self, key: str | None = None) -> None:
        """Land every value logged before this call, waiting only for those.

        With ``key``, only for the values of that key (and, to keep the
        order, those logged before them): a reader of another key waits for
        nothing.  The wait is on the newest staged event logged before the call: work
        on one stream runs in order, so that one wait covers the others of
        its stream.  Values staged on other streams that are still running
        are then waited for one by one.
        """
        if not self.queue:
            return
        with self.lock:
            self._land_ready_locked()
            mark = self._mark(key) if self.queue else None
            newest = None if mark is None else self._newest_staged(mark)
        if mark is None:
            self._speak()
            return
        if newest is not None:
            self.reader_waits += 1
            newest.backend.wait(newest.event)  # outside the lock: others keep logging
        with self.lock:
            queue = self.queue
            while queue and queue[0].seq <= mark:  # other streams' values: waited for here
                self._land_locked(queue.popleft(), wait=True)
        self._speak()

    def _mark(self, key: str | None) -> int | None:
        if key is None:
            return self.queue[-1].seq
        for entry in reversed(self.queue):
            if entry.key == key:
                return entry.seq
        return None

    def _newest_staged(self, mark: int) -> Staged | None:
        for entry in reversed(self.queue):
            if entry.seq > mark:
                continue
            for part in (entry.count, entry.value):
                if type(part) is Staged:
                    return part
        return None

    def wait_for_pending(self, timeout: float | None = None) -> bool:
        """Block (no CPU) until something is queued; True if something is."""
        with self.lock:
            if not self.queue:
                self.has_pending.wait(timeout)
            return bool(self.queue)

    def notify(self) -> None:
        with self.lock:
            self.has_pending.notify_all()

    # -- the process --------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """Forget the parent's staged values and pools without touching its device."""
        for entry in self.queue:
            entry.sink.pending = 0
        pools = dict(self._pools)
        backends = {id(b): b for b in self.backends}
        for ident, pool in pools.items():
            backend = backends.get(ident)
            if backend is not None:
                backend.abandon(pool)
            else:  # a backend swapped out since: keep its pool for good too
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(pool))
        self._reset()

    def stats(self) -> dict[str, int]:
        """Staged values now, waits for a full pool, readers' waits, dropped updates."""
        slots = self.slots if self.slots is not None else slots_from_env()
        return {"pending": len(self.queue), "slots": slots, "full_waits": self.full_waits,
                "reader_waits": self.reader_waits, "dropped": self.dropped}

    def _say_once(self, tag: str, message: str) -> None:
        # Under the lock: the report (a logger, which may do anything) comes after it.
        if tag not in self._said:
            self._said.add(tag)
            self._to_say.append(message)

    def _speak(self) -> None:
        while self._to_say:
            try:
                message = self._to_say.pop(0)
            except IndexError:  # another thread said it
                return
            self.report(message)


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


DEFERRED = Deferred()
"""This process's one queue of staged values."""

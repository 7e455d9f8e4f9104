"""A device for tests without a GPU: tensors whose copies complete on command.

``FakeStream`` models a device stream: work queued on it completes in order,
when the test says so (:meth:`FakeStream.complete`) or when the host waits
for it (:meth:`FakeDevice.wait`, which counts the waits).  A staged copy
writes its slot only when it completes, so a value read too early shows up
as NaN.  ``FakeTensor.item()`` is the blocking read the deferral must
avoid: it counts, or raises when the device forbids it (``forbid_sync``).

Install it with :func:`install` (the deferral then serves FakeTensors
before real CUDA tensors) and remove it with :func:`uninstall`.
"""

from __future__ import annotations

import math
from typing import Any

from .device_values import DEFERRED


class FakeEvent:
    __slots__ = ("done", "index", "stream")

    def __init__(self, stream: FakeStream, index: int) -> None:
        self.stream = stream
        self.index = index
        self.done = False


class FakeStream:
    """Queued copies, completed in order."""

    def __init__(self, name: str = "stream") -> None:
        self.name = name
        self.queued: list[tuple[FakeEvent, Any]] = []  # (event, action) not yet completed

    def complete(self, n: int | None = None) -> int:
        """Complete the ``n`` oldest queued copies (all by default); returns how many."""
        n = len(self.queued) if n is None else min(n, len(self.queued))
        for event, action in self.queued[:n]:
            action()
            event.done = True
        del self.queued[:n]
        return n

    def complete_through(self, event: FakeEvent) -> None:
        while not event.done and self.queued:
            self.complete(1)


class FakeTensor:
    """A one-number tensor on a fake device (or ``device='cpu'``, read at once)."""

    def __init__(self, value: Any, stream: FakeStream | None = None, device: str = "fake",
                 shape: tuple[int, ...] = (), dtype: str = "float32") -> None:
        self.value = value
        self.stream = stream
        self.device = device
        self.shape = shape
        self.dtype = dtype
        self.syncs = 0
        self.forbid_sync = False

    def numel(self) -> int:
        return math.prod(self.shape)

    def item(self) -> Any:
        if self.device != "cpu":
            self.syncs += 1
            if self.forbid_sync:
                raise RuntimeError("a blocking read of a FakeTensor on the device")
        return self.value

    def __repr__(self) -> str:
        return f"FakeTensor({self.value!r}, device={self.device!r})"


class FakeDevice:
    """The deferral's backend for FakeTensors (``shmlog.stats.device_backend.Backend``)."""

    def __init__(self) -> None:
        self.waits: list[FakeEvent] = []
        self.staged = 0
        self.abandoned: list[Any] = []

    def owns(self, value: Any) -> bool:
        return isinstance(value, FakeTensor) and value.device != "cpu"

    def check(self, value: Any, key: str | None, what: str) -> None:
        from .values import to_float

        if value.numel() != 1 or value.dtype == "bool":
            # The errors of the immediate path, from metadata only.
            probe = FakeTensor(value.value, device="cpu", shape=value.shape, dtype=value.dtype)
            to_float(probe, key, what)

    def allocate(self, slots: int) -> list[float]:
        return [math.nan] * slots

    def stage(self, pool: list[float], slot: int, value: FakeTensor) -> FakeEvent:
        self.staged += 1
        stream = value.stream
        if stream is None:
            raise ValueError(f"{value!r} has no stream")
        event = FakeEvent(stream, len(stream.queued))
        pool[slot] = math.nan  # the copy has not happened yet
        number = float(value.value)

        def land() -> None:
            pool[slot] = number

        stream.queued.append((event, land))
        return event

    def ready(self, event: FakeEvent) -> bool:
        return event.done

    def wait(self, event: FakeEvent) -> None:
        self.waits.append(event)
        event.stream.complete_through(event)

    def read(self, pool: list[float], slot: int) -> float:
        return pool[slot]

    def abandon(self, pool: Any) -> None:
        self.abandoned.append(pool)


def install(device: FakeDevice | None = None) -> FakeDevice:
    """Serve FakeTensors through the deferral (before any other backend)."""
    device = device or FakeDevice()
    DEFERRED.add_backend(device)
    return device


def uninstall(device: FakeDevice) -> None:
    """Land what ``device`` staged and stop serving FakeTensors."""
    for entry in DEFERRED.queue:
        for part in (entry.value, entry.count):
            if getattr(part, "backend", None) is device:
                part.event.stream.complete()
    DEFERRED.remove_backend(device)

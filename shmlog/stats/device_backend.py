"""What the staging of device values (``shmlog.stats.device_values``) needs of a device.

:class:`Backend` is the interface one kind of device value implements:
``shmlog.stats.device_torch.TorchCuda`` for PyTorch's CUDA tensors,
``shmlog.stats.device_fake`` for tests without a GPU.  The staging pool's
size comes from ``SHMLOG_DEVICE_SLOTS`` (:func:`slots_from_env`) unless the
program sets it (``shmlog.set_device_slots``).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from ..errors import InvalidValue

DEFAULT_SLOTS = 4096
ENV_SLOTS = "SHMLOG_DEVICE_SLOTS"


def slots_from_env() -> int:
    """The staging pool's size: ``SHMLOG_DEVICE_SLOTS`` or :data:`DEFAULT_SLOTS`."""
    raw = os.environ.get(ENV_SLOTS, "").strip()
    if not raw:
        return DEFAULT_SLOTS
    try:
        slots = int(raw)
    except ValueError:
        slots = 0
    if slots < 2:
        raise InvalidValue(f"environment variable {ENV_SLOTS}={raw!r}: expected an integer >= 2")
    return slots


class Backend(Protocol):
    """What the deferral needs from one kind of device value."""

    def owns(self, value: Any) -> bool:
        """Whether ``value`` is a device value whose reading would block."""

    def check(self, value: Any, key: str | None, what: str) -> None:
        """Refuse a value that is not one number (the errors of ``to_float``)."""

    def allocate(self, slots: int) -> Any:
        """A staging pool of ``slots`` host slots."""

    def stage(self, pool: Any, slot: int, value: Any) -> Any:
        """Start copying ``value`` into ``slot``; return what tells its completion."""

    def ready(self, event: Any) -> bool:
        """Whether the copy behind ``event`` has completed; never blocks."""

    def wait(self, event: Any) -> None:
        """Block until the copy behind ``event`` (and its stream's earlier work) completed."""

    def read(self, pool: Any, slot: int) -> float:
        """The value in ``slot``, as ``to_float(value.item())`` would give it."""

    def abandon(self, pool: Any) -> None:
        """After a fork: keep ``pool`` alive for good without touching the device."""

"""PyTorch's CUDA tensors as device values (``shmlog.stats.device_values``).

torch is never imported here: a value is a CUDA tensor to stage only when the
program has imported torch itself, the value is a ``torch.Tensor`` on a CUDA
device, and CUDA is initialised in this process (``torch.cuda.is_initialized``
is False in a forked child of a CUDA process, which then reads its tensors as
before, and never initialises CUDA).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from ..errors import InvalidType, NotAScalar
from .values import ACCEPTED


def _where(key: str | None, what: str) -> str:
    return f"{key!r} {what}" if key is not None else what


class TorchCuda:
    """PyTorch CUDA tensors: a pinned float64 pool, one reusable event per slot."""

    def owns(self, value: Any) -> bool:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(value, torch.Tensor):
            return False
        try:
            return bool(value.is_cuda) and torch.cuda.is_initialized()
        except (AttributeError, RuntimeError):
            return False

    def check(self, value: Any, key: str | None, what: str) -> None:
        n = value.numel()  # shape metadata, on the host
        if n != 1:
            raise NotAScalar(
                f"{_where(key, what)}: expected {ACCEPTED}, got a CUDA tensor of shape "
                f"{tuple(value.shape)} ({n} elements)")
        dtype = value.dtype
        if dtype.is_complex or dtype == sys.modules["torch"].bool:
            raise InvalidType(
                f"{_where(key, what)}: expected {ACCEPTED}, got a CUDA tensor of dtype {dtype}")

    def allocate(self, slots: int) -> Any:
        torch = sys.modules["torch"]
        host = torch.zeros(slots, dtype=torch.float64, pin_memory=True)
        return {
            "host": host,
            "array": host.numpy(),
            "views": [host.narrow(0, i, 1) for i in range(slots)],
            "events": {},  # (slot, device index) -> its reusable event
        }

    def stage(self, pool: Any, slot: int, value: Any) -> Any:
        torch = sys.modules["torch"]
        # float64 on the device holds every float16/bfloat16/float32 exactly and
        # rounds int64 as Python's float(int) does: what .item() then float() gives.
        source = value.detach().reshape(1)
        if source.dtype != torch.float64:
            source = source.to(torch.float64)
        stream = torch.cuda.current_stream(source.device)
        pool["views"][slot].copy_(source, non_blocking=True)
        events = pool["events"]
        event = events.get((slot, stream.device_index))
        if event is None:  # an event belongs to the device it is first recorded on
            event = events[slot, stream.device_index] = torch.cuda.Event()
        event.record(stream)
        return event

    def ready(self, event: Any) -> bool:
        return bool(event.query())

    def wait(self, event: Any) -> None:
        event.synchronize()

    def read(self, pool: Any, slot: int) -> float:
        return float(pool["array"][slot])

    def abandon(self, pool: Any) -> None:
        # Freeing pinned memory or destroying an event would call into the
        # parent's CUDA context: hold a reference that is never released.
        for item in (pool["host"], *pool["events"].values()):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(item))

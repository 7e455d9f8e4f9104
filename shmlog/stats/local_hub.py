"""A MessageHub's scalars and runtime info kept in this process only.

The same calls as :class:`shmlog.stats.shared_hub.SharedHub`, over two
dicts, so MessageHub has one code path whether or not a session shares it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .device_values import DeferredSink
from .history_buffer import HistoryBuffer


class LocalHub:
    """Scalars and runtime info of one hub, in this process's memory.

    ``dicts`` returns the owner's (scalars, runtime info) dicts and is called
    on every use: code that replaces them on the hub (MMEngine's own tests
    do) is still what the hub serves.
    """

    def __init__(
        self, dicts: Callable[[], tuple[OrderedDict[str, HistoryBuffer], OrderedDict[str, Any]]]
    ) -> None:
        self._dicts = dicts

    @property
    def scalars(self) -> OrderedDict[str, HistoryBuffer]:
        return self._dicts()[0]

    @property
    def info(self) -> OrderedDict[str, Any]:
        return self._dicts()[1]

    def update_scalar(self, key: str, value: float, count: float) -> None:
        buffer = self.scalars.get(key)
        if buffer is None:
            buffer = HistoryBuffer()
            buffer.name = key
            self.scalars[key] = buffer
        buffer.storage.append(value, count)

    def deferred_sink(self, key: str) -> DeferredSink:
        """The storage of ``key`` wrapped for device values (``shmlog.stats.device_values``)."""
        buffer = self.scalars.get(key)
        if buffer is None:
            buffer = HistoryBuffer()
            buffer.name = key
            self.scalars[key] = buffer
        storage = buffer.storage
        if type(storage) is not DeferredSink:
            storage = buffer.storage = DeferredSink(storage, key)
        return storage

    def get_scalar(self, key: str) -> HistoryBuffer | None:
        return self.scalars.get(key)

    def log_scalars(self) -> OrderedDict[str, HistoryBuffer]:
        return self.scalars

    def load_scalar(self, key: str, buffer: HistoryBuffer) -> None:
        self.scalars[key] = buffer

    def update_info(self, key: str, value: Any) -> None:
        self.info[key] = value

    def get_info(self, key: str, default: Any = None) -> Any:
        return self.info.get(key, default)

    def pop_info(self, key: str, default: Any = None) -> Any:
        return self.info.pop(key, default)

    def runtime_info(self) -> OrderedDict[str, Any]:
        return self.info

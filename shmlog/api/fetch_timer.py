"""Timing each batch a DataLoader process builds: fetch and collate, per process.

The fetcher is the only object that sees both ends of "fetch and collate",
and torch creates it in the worker right after ``worker_init_fn`` (and again
after each epoch for persistent workers) through
``torch.utils.data._DatasetKind.create_fetcher``.  So the worker side wraps
that factory, in the worker process only (a worker is a process of its own,
so no other loader is affected); the main process wraps the fetcher of each
single-process iterator (``shmlog.api.dataloader``).  Both hooks are private
torch API; where a torch version lacks them, loading still works and a
warning says that data time is not recorded.

torch is imported only inside functions that run where torch already is.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .message_hub import MessageHub
from .process import PROCESS


def warn_once(tag: str, message: str) -> None:
    if PROCESS.warn_once(tag):
        warnings.warn(message, stacklevel=3)


class Recorder:
    """Records one data time per batch into MessageHub ``hub`` under ``key``.

    The hub is looked up on first use, in the process that records: a forked
    worker must use its own view of the hub, not one resolved in its parent.
    """

    __slots__ = ("_hub", "hub", "key")

    def __init__(self, key: str, hub: str) -> None:
        self.key = key
        self.hub = hub
        self._hub: MessageHub | None = None

    def __call__(self, seconds: float) -> None:
        hub = self._hub
        if hub is None:
            hub = self._hub = MessageHub.get_instance(self.hub)
        hub.update_scalar(self.key, seconds)

    def __getstate__(self) -> dict[str, str]:
        return {"key": self.key, "hub": self.hub}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.key = state["key"]
        self.hub = state["hub"]
        self._hub = None


class TimedFetcher:
    """A torch dataset fetcher that times each ``fetch`` (dataset reads + collate).

    One ``perf_counter`` pair and one ``update_scalar`` per batch; a fetch that
    raises records nothing.  Other attributes are the wrapped fetcher's, for
    code that inspects it (``dataset``, ``dataset_iter``, ...).
    """

    def __init__(self, fetcher: Any, record: Recorder) -> None:
        self.__dict__["_fetcher"] = fetcher
        self.__dict__["_record"] = record

    def fetch(self, possibly_batched_index: Any) -> Any:
        start = perf_counter()
        data = self._fetcher.fetch(possibly_batched_index)
        self._record(perf_counter() - start)
        return data

    def __getattr__(self, name: str) -> Any:
        try:
            fetcher = self.__dict__["_fetcher"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(fetcher, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fetcher, name, value)


class TimedFetcherFactory:
    """Stands in for ``_DatasetKind.create_fetcher`` inside one worker process."""

    def __init__(self, inner: Callable[..., Any], record: Recorder) -> None:
        self.inner = inner
        self.record = record

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return TimedFetcher(self.inner(*args, **kwargs), self.record)


def install_fetch_timer(record: Recorder) -> bool:
    """Time every fetcher torch creates from now on in this (worker) process."""
    try:
        from torch.utils.data import dataloader as torch_dataloader
    except ImportError:  # pragma: no cover - a worker always has torch
        return False
    kind = getattr(torch_dataloader, "_DatasetKind", None)
    current = getattr(kind, "__dict__", {}).get("create_fetcher")
    if not isinstance(current, staticmethod):
        warn_once(
            "no-create-fetcher",
            "shmlog: this torch version has no DataLoader fetcher factory "
            "(_DatasetKind.create_fetcher); DataLoader workers are labelled in the "
            "session but their data time is not recorded",
        )
        return False
    inner = current.__func__
    if isinstance(inner, TimedFetcherFactory):  # installed before: replace the settings
        inner = inner.inner
    kind.create_fetcher = staticmethod(TimedFetcherFactory(inner, record))
    return True



def in_dataloader_worker() -> bool:
    # A direct call from the main process (a test, a framework) must not patch
    # the main process's fetcher factory: that would time every loader in it.
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return torch.utils.data.get_worker_info() is not None

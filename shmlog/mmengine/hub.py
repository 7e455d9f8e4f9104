"""An MMEngine MessageHub whose storage is the session's.

MMEngine's Runner builds its hub with MMEngine's own MessageHub class, bound
in ``mmengine.runner.runner`` when that module is imported, so the hub
cannot be made a shmlog one.  Its storage can: MMEngine's MessageHub keeps
everything in two dicts, ``_log_scalars`` and ``_runtime_info``, and reads
and writes them only through the mapping protocol.  :func:`share` puts two
mappings in their place that read and write the session under the hub's
name, the same storage as ``shmlog.MessageHub.get_instance(name)``:

* scalars (:class:`SharedScalars`) are the session's: an ``update_scalar``
  in any process (the Runner's, its DataLoader workers) appends to that
  process's ring, and reading a key merges the rings of the reading
  process's rank (``shmlog.stats.shared_hub``);
* runtime info (:class:`SharedInfo`) is published in the session for the
  other processes (``shmlog top``, workers), and read back from this
  process's own copy first: MMEngine's info is per process (each rank has
  its own ``eta``, its own metrics), and it may hold what shared memory
  does not take (tensors, more than 1 MiB), which then stays in this process.

Tensors on a device (the losses of a model's ``log_vars``, which MMEngine's
``RuntimeInfoHook`` logs every iteration) are not read by MMEngine's
``update_scalar``, whose ``.item()`` would wait for the device: a shared hub's
``update_scalar`` stages them (``shmlog.api.device``), and every read of the
hub's scalars (LoggerHook's, at its logging interval) first lands what this
process logged before it.

Checkpoints hold the keys whose ``resumed`` flag is true, and a hub only
knows the flags of the keys its own process updated.  A scalar that other
processes (DataLoader workers) update counts as resumed, MMEngine's default
(:class:`ResumedKeys`).

:func:`unshare` copies everything back into plain dicts (MMEngine's own
HistoryBuffers), for the hub to outlive the session.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

from ..api.device import defer, settle
from ..api.process import PROCESS
from ..errors import InvalidType
from ..stats.device_values import DEFERRED
from ..stats.history_buffer import HistoryBuffer
from ..stats.portable import History, rebuild_as
from ..stats.shared_hub import SharedHub

_MISSING = object()


class SharedScalars(MutableMapping):
    """A hub's ``_log_scalars`` in the session: the HistoryBuffers of hub ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _hub(self) -> SharedHub:
        shared = PROCESS.shared_hub(self.name)
        if shared is None:
            raise LookupError(f"MessageHub {self.name!r} is shared, but no shmlog session is open")
        return shared

    def __getitem__(self, key: str) -> HistoryBuffer:
        hub = self._hub()
        writer = hub.ring_writers().get(key)
        if writer is not None:
            # MMEngine's update path reads the buffer only to update it.
            return HistoryBuffer.over(_OwnKey(hub, key, writer), key)
        settle(key)
        buffer = hub.get_scalar(key)
        if buffer is None:
            raise KeyError(key)
        return buffer

    def __contains__(self, key: object) -> bool:
        hub = self._hub()
        # This thread writes the key (the update path of MMEngine's hub): it is there.
        return key in hub.ring_writers() or (isinstance(key, str) and hub.get_scalar(key) is not None)

    def __setitem__(self, key: str, buffer: Any) -> None:
        """Load ``buffer`` (MMEngine's or shmlog's) into this process's ring for ``key``.

        MMEngine's hub assigns a key's first update as a buffer of one value,
        and a resumed checkpoint's buffers the same way.
        """
        adopted = HistoryBuffer.adopt(buffer)
        if adopted is None:
            raise InvalidType(
                f"log_scalars[{key!r}]: expected a HistoryBuffer (MMEngine's or shmlog's), got "
                f"{type(buffer).__name__}"
            )
        self._hub().load_scalar(key, adopted)

    def __delitem__(self, key: str) -> None:
        raise InvalidType(
            f"log_scalars[{key!r}]: a scalar cannot be removed from a hub shared by a shmlog "
            f"session (other processes write it)"
        )

    def _scalars(self) -> OrderedDict[str, HistoryBuffer]:
        settle()  # what this process logged on a device, up to now
        return self._hub().log_scalars()

    def __iter__(self) -> Iterator[str]:
        return iter(self._scalars())

    def __len__(self) -> int:
        return len(self._scalars())

    def items(self) -> Any:
        return self._scalars().items()

    def values(self) -> Any:
        return self._scalars().values()

    def __repr__(self) -> str:
        return f"<shmlog SharedScalars of hub {self.name!r}>"


class _OwnKey:
    """Storage of a key this thread writes: appends go to its ring, reads merge when asked."""

    def __init__(self, hub: SharedHub, key: str, writer: Any) -> None:
        self._hub = hub
        self._key = key
        self._writer = writer
        self._storage: Any = None

    def append(self, value: float, count: float) -> None:
        self._writer.append(value, count)

    def __getattr__(self, name: str) -> Any:
        if self._storage is None:
            settle(self._key)
            self._storage = self._hub.get_scalar(self._key).storage
        return getattr(self._storage, name)


class SharedInfo(MutableMapping):
    """A hub's ``_runtime_info``: this process's values first, then the session's."""

    def __init__(self, name: str, local: dict[str, Any] | None = None) -> None:
        self.name = name
        self.local: OrderedDict[str, Any] = OrderedDict(local or {})
        self.kept_local: set[str] = set()  # keys shared memory refused (not plain data)

    def _hub(self) -> SharedHub | None:
        return PROCESS.shared_hub(self.name)

    def __setitem__(self, key: str, value: Any) -> None:
        self.local[key] = value
        hub = self._hub()
        if hub is None:
            return
        try:
            hub.update_info(key, value)
        except (TypeError, ValueError):
            # Not plain data, or too large: it stays this process's, as in
            # MMEngine; no older shared value may stand for it.
            self.kept_local.add(key)
            hub.pop_info(key)

    def __getitem__(self, key: str) -> Any:
        if key in self.local:
            return self.local[key]
        hub = self._hub()
        value = _MISSING if hub is None else hub.get_info(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        if key in self.local:
            return True
        hub = self._hub()
        return isinstance(key, str) and hub is not None and hub.get_info(key, _MISSING) is not _MISSING

    def __delitem__(self, key: str) -> None:
        found = self.local.pop(key, _MISSING)
        hub = self._hub()
        shared = _MISSING if hub is None else hub.pop_info(key, _MISSING)
        if found is _MISSING and shared is _MISSING:
            raise KeyError(key)

    def _merged(self) -> OrderedDict[str, Any]:
        hub = self._hub()
        merged = OrderedDict() if hub is None else hub.runtime_info()
        merged.update(self.local)
        return merged

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def items(self) -> Any:
        return self._merged().items()

    def __repr__(self) -> str:
        return f"<shmlog SharedInfo of hub {self.name!r}>"


class ResumedKeys(OrderedDict):
    """A hub's ``_resumed_keys``: the scalars other processes update count as resumed.

    Pickles as a plain OrderedDict, so that checkpoints load without shmlog.
    """

    def __init__(self, *args: Any, scalars: SharedScalars | None = None) -> None:
        super().__init__(*args)
        self.scalars = scalars

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        if self.scalars is not None and key in self.scalars:
            return True  # MMEngine's default for update_scalar
        return default

    def __reduce_ex__(self, protocol: int) -> Any:
        return OrderedDict, (list(self.items()),)


def is_shared(hub: Any) -> bool:
    return isinstance(getattr(hub, "_log_scalars", None), SharedScalars)


def share(hub: Any) -> None:
    """Make MMEngine MessageHub ``hub`` store in the open session (see the module docstring).

    What the hub holds already (a resumed history, info set before) goes into
    the session.  Sharing a shared hub again changes nothing.
    """
    if is_shared(hub):
        return
    name = hub.instance_name
    if PROCESS.shared_hub(name) is None:
        raise LookupError(f"sharing MessageHub {name!r} needs an open shmlog session")
    scalars, info = SharedScalars(name), SharedInfo(name)
    for key, buffer in hub._log_scalars.items():
        scalars[key] = buffer
    for key, value in hub._runtime_info.items():
        info[key] = value
    hub._log_scalars, hub._runtime_info = scalars, info
    hub._resumed_keys = ResumedKeys(hub._resumed_keys, scalars=scalars)
    hub.update_scalar = _DeferringUpdate(hub)


class _DeferringUpdate:
    """A shared MMEngine hub's ``update_scalar``: device tensors are staged, not read."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self._update = type(hub).update_scalar

    def __call__(self, key: str, value: Any, count: Any = 1, resumed: bool = True) -> None:
        hub = self._hub
        if DEFERRED.backend_of(value) is None and DEFERRED.backend_of(count) is None:
            self._update(hub, key, value, count, resumed)
            return
        shared = PROCESS.shared_hub(hub.instance_name)
        if shared is None:  # the session is gone: MMEngine's own path
            self._update(hub, key, value, count, resumed)
            return
        DEFERRED.validate(value, key)
        hub._set_resumed_keys(key, resumed)
        defer(shared, key, value, count)


def unshare(hub: Any, buffer_class: type) -> None:
    """Copy ``hub``'s shared storage back into plain dicts, with ``buffer_class`` buffers.

    The scalars are those of this process's rank, as the hub read them.
    """
    if not is_shared(hub):
        return
    hub.__dict__.pop("update_scalar", None)
    settle()
    scalars: OrderedDict[str, Any] = OrderedDict()
    for key, buffer in hub._log_scalars.items():
        values, counts = buffer.data
        history = History(values, counts, buffer.max_length, buffer.totals())
        scalars[key] = rebuild_as(buffer_class, history)
    info = OrderedDict(hub._runtime_info.items())
    resumed = OrderedDict(hub._resumed_keys)
    for key in scalars:
        resumed.setdefault(key, hub._resumed_keys.get(key, True))
    hub._log_scalars, hub._runtime_info, hub._resumed_keys = scalars, info, resumed

"""MessageHub: named hubs of scalar histories and runtime info.

Outside a session a hub keeps everything in this process, as MMEngine does.
Inside a session (``shmlog.init``) the same calls go to shared memory:
``update_scalar`` appends to this process's own ring for the key, and
``get_scalar`` returns a HistoryBuffer that merges every process's ring.
Which of the two applies is decided per call (:meth:`MessageHub._store`), so
a hub created before ``shmlog.init`` (at import time, say) starts sharing
once the session exists.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Any

from ..errors import InvalidKey, InvalidType, InvalidValue
from ..stats.device_values import DEFERRED
from ..stats.history_buffer import HistoryBuffer
from ..stats.local_hub import LocalHub
from ..stats.values import check_hub_name, check_key, to_count, to_float
from .device import defer, settle
from .logger import print_log
from .manager import ManagerMixin
from .process import PROCESS


class MessageHub(ManagerMixin):
    """Scalars (as HistoryBuffers) and runtime info shared across modules.

    Args:
        name: the instance name (see :meth:`get_instance`).
        log_scalars: initial HistoryBuffers by key.
        runtime_info: initial runtime info by key.
        resumed_keys: whether each key is saved by :meth:`state_dict`.
    """

    def __init__(
        self,
        name: str,
        log_scalars: dict[str, HistoryBuffer] | None = None,
        runtime_info: dict[str, Any] | None = None,
        resumed_keys: dict[str, bool] | None = None,
    ) -> None:
        super().__init__(name)
        check_hub_name(name)
        self._log_scalars: OrderedDict[str, HistoryBuffer] = _as_ordered("log_scalars", log_scalars)
        for key, value in self._log_scalars.items():
            check_key(key, name)
            if not isinstance(value, HistoryBuffer):
                raise InvalidType(
                    f"log_scalars[{key!r}]: expected a HistoryBuffer, got "
                    f"{type(value).__name__}"
                )
            value.name = key
        self._runtime_info: OrderedDict[str, Any] = _as_ordered("runtime_info", runtime_info)
        self._resumed_keys: OrderedDict[str, bool] = _as_ordered("resumed_keys", resumed_keys)
        for key in (*self._runtime_info, *self._resumed_keys):
            check_key(key, name)
        for key in self._resumed_keys:
            if key not in self._log_scalars and key not in self._runtime_info:
                raise InvalidValue(
                    f"resumed_keys[{key!r}]: every resumed key must be a key of log_scalars "
                    f"or runtime_info; this hub has log_scalars {sorted(self._log_scalars)} "
                    f"and runtime_info {sorted(self._runtime_info)}"
                )
        self._local = LocalHub(self._own_dicts)
        self._bound_token: object | None = None
        self._bound_local: Any = None
        shared = PROCESS.shared_hub(name)
        if shared is not None:
            for key, buffer in self._log_scalars.items():
                shared.load_scalar(key, buffer)
            for key, value in self._runtime_info.items():
                shared.update_info(key, value)

    def _check_key(self, key: Any) -> None:
        """Refuse a key no hub may hold (``shmlog.stats.values.check_key``)."""
        # Every key in _resumed_keys was checked on its way in.
        if type(key) is not str or key not in self._resumed_keys:
            check_key(key, self._instance_name)

    def _own_dicts(self) -> tuple[OrderedDict[str, HistoryBuffer], OrderedDict[str, Any]]:
        """This hub's own dicts, for its LocalHub (read at every use: they may be replaced)."""
        return self._log_scalars, self._runtime_info

    def _store(self) -> Any:
        """Where this hub's data is now: the session's SharedHub, or this process's LocalHub."""
        shared = PROCESS.shared_hub(self._instance_name)
        return self._local if shared is None else shared

    @classmethod
    def get_current_instance(cls) -> MessageHub:
        """The most recently created hub; creates 'mmengine' when there is none."""
        if not cls._instance_dict:
            cls.get_instance("mmengine")
        return super().get_current_instance()

    # -- scalars -------------------------------------------------------------

    def update_scalar(self, key: str, value: Any, count: Any = 1, resumed: bool = True) -> None:
        """Append ``value`` (weighted by ``count``) to the history of ``key``."""
        # The hot path inside a session: a float with the default count, for a
        # key this thread already writes.  Everything else takes the full path.
        if type(value) is float and count.__class__ is int and count == 1:
            try:
                hot = self._resumed_keys.get(key) is resumed
            except TypeError:  # an unhashable key, refused by the full path
                hot = False
            token = PROCESS.token
            if not hot:
                pass
            elif token is None:  # no session: this process's own ring
                buffer = self._log_scalars.get(key)
                if buffer is not None:
                    buffer.storage.append(value, 1.0)
                    return
            elif self._bound_token is token:
                try:
                    self._bound_local.writers[key].append(value, 1.0)
                    return
                except (AttributeError, KeyError):
                    pass
        self._update_scalar(key, value, count, resumed)

    def _update_scalar(self, key: str, value: Any, count: Any, resumed: bool) -> None:
        # Validate before recording ``resumed``: a refused value leaves no trace.
        self._check_key(key)
        if DEFERRED.backend_of(value) is not None or DEFERRED.backend_of(count) is not None:
            # A device tensor: staged, never read here (shmlog.api.device).
            self._check_resumed(key, resumed)
            defer(self._store(), key, value, count)
            self._set_resumed_keys(key, resumed)
            return
        number = to_float(value, key)
        weight = to_count(count, key)
        if self._resumed_keys.get(key) is not resumed:
            self._set_resumed_keys(key, resumed)
        shared = PROCESS.shared_hub(self._instance_name)
        if shared is None:
            self._local.update_scalar(key, number, weight)
            return
        shared.update_scalar(key, number, weight)
        # Cache the binding for the hot path; the token is read after the
        # lookup, which may itself have attached this process.
        self._bound_local = shared._local
        self._bound_token = PROCESS.token

    def update_scalars(self, log_dict: dict[str, Any], resumed: bool = True) -> None:
        """Update several scalars; each value is a number or ``dict(value=..., count=...)``."""
        if not isinstance(log_dict, dict):
            raise InvalidType(
                f"update_scalars: expected a dict of key -> value, got {type(log_dict).__name__}"
            )
        # Validate everything first so a bad entry leaves no partial update.
        parsed = []
        for key, item in log_dict.items():
            self._check_key(key)
            if isinstance(item, dict):
                if "value" not in item:
                    raise InvalidKey(
                        f"update_scalars[{key!r}]: a dict value needs a 'value' entry, got "
                        f"keys {sorted(item)}"
                    )
                value, count = item["value"], item.get("count", 1)
            else:
                value, count = item, 1
            # Device tensors are checked from their metadata and stay on the device.
            parsed.append((key, DEFERRED.validate(value, key), DEFERRED.validate(count, key, "count")))
            self._check_resumed(key, resumed)
        for key, value, count in parsed:
            self.update_scalar(key, value, count, resumed)

    def get_scalar(self, key: str) -> HistoryBuffer:
        """The HistoryBuffer of ``key``; KeyError when nothing was logged under it."""
        self._check_key(key)
        settle(key)  # values of key this process logged before, still on their device
        buffer = self._store().get_scalar(key)
        if buffer is None:
            raise KeyError(
                f"{key!r} is not a scalar of MessageHub {self._instance_name!r}; "
                f"known keys: {sorted(self.log_scalars)}"
            )
        return buffer

    @property
    def log_scalars(self) -> OrderedDict[str, HistoryBuffer]:
        """Every scalar of this hub (in a session: of every process)."""
        settle()
        return self._store().log_scalars()

    # -- runtime info ----------------------------------------------------------

    def update_info(self, key: str, value: Any, resumed: bool = True) -> None:
        """Set runtime info ``key`` to ``value`` (the last write wins)."""
        self._check_key(key)
        self._set_resumed_keys(key, resumed)
        self._store().update_info(key, value)

    def update_info_dict(self, info_dict: dict[str, Any], resumed: bool = True) -> None:
        """Set several runtime info entries."""
        if not isinstance(info_dict, dict):
            raise InvalidType(
                f"update_info_dict: expected a dict, got {type(info_dict).__name__}"
            )
        for key in info_dict:
            self._check_key(key)  # a bad key leaves every entry unset
        for key, value in info_dict.items():
            self.update_info(key, value, resumed=resumed)

    def get_info(self, key: str, default: Any = None) -> Any:
        """Runtime info ``key``, or ``default`` when it was never set."""
        self._check_key(key)
        return self._store().get_info(key, default)

    def pop_info(self, key: str, default: Any = None) -> Any:
        """Remove runtime info ``key`` and return its value (or ``default``)."""
        self._check_key(key)
        return self._store().pop_info(key, default)

    @property
    def runtime_info(self) -> OrderedDict[str, Any]:
        """Every runtime info entry of this hub."""
        return self._store().runtime_info()

    # -- resuming ----------------------------------------------------------------

    def _check_resumed(self, key: str, resumed: bool) -> None:
        if not isinstance(resumed, bool):
            raise InvalidType(f"{key!r} resumed: expected a bool, got {resumed!r}")
        previous = self._resumed_keys.get(key, resumed)
        if previous is not resumed:
            raise InvalidValue(
                f"{key!r} was logged with resumed={previous}; it cannot be logged with "
                f"resumed={resumed} later"
            )

    def _set_resumed_keys(self, key: str, resumed: bool) -> None:
        self._check_resumed(key, resumed)
        self._resumed_keys.setdefault(key, resumed)

    def state_dict(self) -> dict[str, Any]:
        """Copies of the scalars and info whose key is resumed, for checkpoints."""
        scalars: OrderedDict[str, HistoryBuffer] = OrderedDict()
        for key, buffer in self.log_scalars.items():
            if self._resumed_keys.get(key, False):
                scalars[key] = copy.deepcopy(buffer)
        info: OrderedDict[str, Any] = OrderedDict()
        for key, value in self.runtime_info.items():
            if self._resumed_keys.get(key, False):
                try:
                    info[key] = copy.deepcopy(value)
                except Exception:  # noqa: BLE001 (deepcopy may raise anything)
                    _warn(f"runtime info {key!r} cannot be deep-copied; saving a reference")
                    info[key] = value
        return {
            "log_scalars": scalars,
            "runtime_info": info,
            "resumed_keys": OrderedDict(self._resumed_keys),
        }

    def load_state_dict(self, state_dict: MessageHub | dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (or copy another hub whole).

        The saved buffers may be shmlog's or MMEngine's (a checkpoint of a run
        without shmlog): their histories and update counts are restored.
        """
        if isinstance(state_dict, MessageHub) or _is_hub(state_dict):
            source = state_dict
            state_dict = {
                "log_scalars": source.log_scalars,
                "runtime_info": source.runtime_info,
                "resumed_keys": source._resumed_keys,
            }
        if not isinstance(state_dict, dict):
            raise InvalidType(
                f"load_state_dict: expected a dict from state_dict() or a MessageHub, got "
                f"{type(state_dict).__name__}"
            )
        missing = [k for k in ("log_scalars", "runtime_info", "resumed_keys") if k not in state_dict]
        if missing:
            raise InvalidKey(f"load_state_dict: the state dict lacks {missing}")
        for key in (*state_dict["log_scalars"], *state_dict["runtime_info"]):
            self._check_key(key)  # before anything is restored
        store = self._store()
        for key, buffer in state_dict["log_scalars"].items():
            # MMEngine's own HistoryBuffers (a checkpoint saved without shmlog) too.
            adopted = HistoryBuffer.adopt(buffer)
            if adopted is None:
                kind = f"{type(buffer).__module__}.{type(buffer).__qualname__}"
                _warn(f"log_scalars[{key!r}] is a {kind}, not a HistoryBuffer of shmlog or "
                      f"MMEngine; it is not restored")
                continue
            restored = copy.deepcopy(adopted)
            restored.name = key
            store.load_scalar(key, restored)
        for key, value in state_dict["runtime_info"].items():
            try:
                value = copy.deepcopy(value)
            except Exception:  # noqa: BLE001 (deepcopy may raise anything)
                _warn(f"runtime info {key!r} cannot be deep-copied; restoring a reference")
            store.update_info(key, value)
        known = set(self.log_scalars) | set(self.runtime_info)
        for key, resumed in state_dict["resumed_keys"].items():
            if key not in known:
                _warn(f"resumed key {key!r} has no scalar or info in the state dict; skipped")
                continue
            if not resumed:
                _warn(f"{key!r} is restored although resumed=False; it will not be saved "
                      f"by the next state_dict()")
            self._resumed_keys[key] = resumed

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self._instance_name,
            "log_scalars": OrderedDict(self.log_scalars),
            "runtime_info": OrderedDict(self.runtime_info),
            "resumed_keys": OrderedDict(self._resumed_keys),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._instance_name = state["name"]
        self._log_scalars = OrderedDict(
            (k, copy.deepcopy(v)) for k, v in state["log_scalars"].items()
        )
        self._runtime_info = state["runtime_info"]
        self._resumed_keys = state["resumed_keys"]
        self._local = LocalHub(self._own_dicts)
        self._bound_token = None
        self._bound_local = None

    def kept_here(self) -> tuple[OrderedDict[str, HistoryBuffer], OrderedDict[str, Any]]:
        """The dicts of scalars and runtime info this hub keeps in this process.

        What it serves outside a session; ``shmlog.api.retention`` moves them
        into a session and fills them from it when the process leaves.
        """
        return self._log_scalars, self._runtime_info


def _is_hub(obj: Any) -> bool:
    """Whether ``obj`` is a hub of MMEngine's kind (its checkpoints may hold one whole)."""
    return not isinstance(obj, dict) and all(
        hasattr(obj, name) for name in ("log_scalars", "runtime_info", "_resumed_keys"))


def _as_ordered(name: str, value: dict[str, Any] | None) -> OrderedDict[str, Any]:
    if value is None:
        return OrderedDict()
    if isinstance(value, dict):
        return OrderedDict(value)
    raise InvalidType(f"MessageHub {name}: expected a dict or None, got {type(value).__name__}")


def _warn(message: str) -> None:
    print_log(message, logger="current", level=logging.WARNING)

"""HistoryBuffer: MMEngine's per-scalar history, over pluggable storage.

The public surface is MMEngine's (constructor, ``update``, ``data``,
``min``/``max``/``mean``/``current``, ``statistics``, ``register_statistics``)
so that code written for MMEngine runs unchanged.  What differs is underneath:

* storage is a ring (see :mod:`shmlog.stats.storage`), so ``update`` does not
  slow down as the history grows;
* global statistics come from running totals, so they stay exact over the whole
  run even after the ring dropped its oldest records;
* the same class reads a scalar that several processes write into shared
  memory: the storage then merges every writer's records in time order.

The seam to the layers around it: ``buffer.storage`` is the
:class:`~shmlog.stats.storage.HistoryStorage` it reads and writes (a
``LocalRing`` in one process, a ``MergedRings`` over shared memory),
``HistoryBuffer.over(storage, name)`` wraps a storage without copying, and
``buffer.name`` is the key the buffer is logged under (None when it is not
known), which messages name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidType, InvalidValue
from .portable import History, mmengine_class, mmengine_statistic, read_history, reduce_as
from .storage import HistoryStorage, LocalRing, Totals
from .values import check_window, to_count, to_float

DEFAULT_MAX_LENGTH = 1_000_000

# Keys already warned about a window that reaches past the retained records.
_WARNED_KEYS: set[str] = set()


class HistoryBuffer:
    """The history of one scalar, with windowed and global statistics.

    Args:
        log_history: initial values, oldest first: a list, tuple, numpy array
            or tensor of numbers, of any shape (read in C order, as
            MMEngine's first ``update`` flattens it).
        count_history: the count of each initial value (same number of
            them).  An initial history is taken as it is given: its counts
            may be any finite numbers, while :meth:`update` accepts only
            counts >= 0.
        max_length: how many records are retained; older ones are dropped,
            but the global statistics still include them.
    """

    _statistics_methods: ClassVar[dict[str, Callable[..., Any]]] = {}

    def __init__(
        self,
        log_history: Any = (),
        count_history: Any = (),
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise InvalidType(f"max_length: expected an int >= 1, got {max_length!r}")
        if max_length < 1:
            raise InvalidValue(f"max_length: expected an int >= 1, got {max_length}")
        values = history_array(log_history, "log_history")
        counts = history_array(count_history, "count_history")
        if len(counts) and not np.isfinite(counts).all():
            bad = counts[~np.isfinite(counts)][0]
            raise InvalidValue(f"count_history: expected finite numbers, got {bad}")
        if len(values) != len(counts):
            raise InvalidValue(
                f"log_history and count_history must have the same length, got "
                f"{len(values)} and {len(counts)}"
            )
        if len(values) > max_length:
            warnings.warn(
                f"The length of history buffer({len(values)}) exceeds the "
                f"max_length({max_length}), the first few elements will be ignored.",
                stacklevel=2,
            )
            values, counts = values[-max_length:], counts[-max_length:]
        self.storage: HistoryStorage = LocalRing.from_history(values, counts, int(max_length))
        self.name: str | None = None

    @classmethod
    def over(cls, storage: HistoryStorage, name: str | None = None) -> HistoryBuffer:
        """A buffer reading and writing ``storage`` (no copy)."""
        buffer = cls.__new__(cls)
        buffer.storage = storage
        buffer.name = name
        return buffer

    # -- writing -----------------------------------------------------------

    def update(self, log_val: Any, count: Any = 1) -> None:
        """Append one value with its count (used as the mean's denominator)."""
        value = to_float(log_val, self.name)
        weight = to_count(count, self.name)
        self.storage.append(value, weight)

    # -- reading -----------------------------------------------------------

    @property
    def max_length(self) -> int:
        return self.storage.max_length

    @property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the retained (values, counts), oldest first."""
        values, counts = self.storage.tail(None)
        return np.array(values), np.array(counts)

    @property
    def _log_history(self) -> np.ndarray:
        # Read-only, ordered view for statistics registered MMEngine-style
        # (``self._log_history[-window:]``).
        return self.storage.tail(None)[0]

    @property
    def _count_history(self) -> np.ndarray:
        return self.storage.tail(None)[1]

    def totals(self) -> Totals:
        """Running totals over every update, including dropped records."""
        return self.storage.totals()

    def __len__(self) -> int:
        return self.storage.retained()

    def per_writer(self) -> dict[str, HistoryBuffer]:
        """One buffer per writer (a thread of some process), keyed by a readable label.

        Every writer of the key, of every rank (``'rank1/worker0'``), even
        though the statistics of a hub's buffer merge only the reading
        process's rank (``shmlog.stats.shared_hub``).  A buffer that lives in
        one process has a single writer: itself.
        """
        split = getattr(self.storage, "per_writer", None)
        if split is None:
            return {"local": self}
        return {label: HistoryBuffer.over(storage, self.name) for label, storage in split().items()}

    # -- statistics ----------------------------------------------------------

    @classmethod
    def register_statistics(cls, method: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``method`` (named by its ``__name__``) for :meth:`statistics`."""
        name = method.__name__
        if name in cls._statistics_methods:
            raise InvalidValue(
                f"a statistics method named {name!r} is already registered in "
                f"HistoryBuffer"
            )
        cls._statistics_methods[name] = method
        return method

    @classmethod
    def knows_statistic(cls, method_name: str) -> bool:
        """Whether :meth:`statistics` finds ``method_name`` in this process."""
        return (method_name in cls._statistics_methods
                or mmengine_statistic(method_name, HistoryBuffer) is not None)

    @classmethod
    def statistic_names(cls) -> list[str]:
        """The statistics registered with this class in this process, sorted."""
        return sorted(cls._statistics_methods)

    def statistics(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered statistic ``method_name`` with the given arguments.

        In a process that uses MMEngine, statistics registered on MMEngine's
        HistoryBuffer are found too.
        """
        method = self._statistics_methods.get(method_name)
        if method is None:  # registered with MMEngine's class, in a process that uses it
            method = mmengine_statistic(method_name, HistoryBuffer)
        if method is None:
            raise KeyError(
                f"{method_name!r} is not a registered HistoryBuffer statistic; "
                f"registered: {sorted(self._statistics_methods)}"
            )
        return method(self, *args, **kwargs)

    def _window(self, window_size: Any, what: str) -> tuple[Totals | None, np.ndarray, np.ndarray]:
        """Resolve a window to either the running totals or the records to use."""
        window = check_window(window_size, self.name)
        totals = self.storage.totals()
        if totals.updates == 0:
            label = f"{self.name!r}" if self.name else "HistoryBuffer"
            raise ValueError(f"{label}: {what}() needs at least one update, the history is empty")
        if window is None or window >= totals.updates:
            return totals, _EMPTY, _EMPTY
        values, counts, complete = self.storage.window(window)
        if not complete:
            self._warn_short_window(window, self.storage.retained(), totals.updates)
        return None, values, counts

    def _warn_short_window(self, window: int, retained: int, updates: int) -> None:
        if self.name is None:
            # Unnamed buffers remember on themselves: an id() can be reused.
            if getattr(self, "_warned_short_window", False):
                return
            self._warned_short_window = True
            key = "HistoryBuffer"
        else:
            if self.name in _WARNED_KEYS:
                return
            _WARNED_KEYS.add(self.name)
            key = self.name
        warnings.warn(
            f"{key!r}: window_size {window} is longer than the {retained} records retained "
            f"(of {updates} updates); computing over the retained records. Raise "
            f"max_length to keep more.",
            stacklevel=4,
        )

    def mean(self, window_size: int | None = None) -> np.float64:
        """Sum of values over sum of counts, for the last ``window_size`` updates."""
        totals, values, counts = self._window(window_size, "mean")
        if totals is not None:
            return np.float64(totals.value_sum) / np.float64(totals.count_sum)
        return values.sum() / counts.sum()

    def max(self, window_size: int | None = None) -> np.float64:
        """Largest value among the last ``window_size`` updates."""
        totals, values, _ = self._window(window_size, "max")
        if totals is not None:
            return np.float64(totals.maximum)
        return values.max()

    def min(self, window_size: int | None = None) -> np.float64:
        """Smallest value among the last ``window_size`` updates."""
        totals, values, _ = self._window(window_size, "min")
        if totals is not None:
            return np.float64(totals.minimum)
        return values.min()

    def current(self) -> np.float64:
        """The latest value."""
        values, _ = self.storage.tail(1)
        if len(values) == 0:
            label = f"{self.name!r}" if self.name else "HistoryBuffer"
            raise ValueError(f"{label}: current() needs at least one update, the history is empty")
        return values[-1]

    # -- copying -------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        values, counts = self.storage.tail(None)
        return {
            "values": np.array(values),
            "counts": np.array(counts),
            "totals": tuple(self.storage.totals()),
            "max_length": self.storage.max_length,
            "name": self.name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "values" not in state:  # MMEngine's layout (see shmlog.stats.portable)
            history = read_history(state)
            if history is None:
                raise InvalidValue(
                    f"HistoryBuffer state: expected shmlog's or MMEngine's layout, got keys "
                    f"{sorted(state)}"
                )
            self.storage = _ring(history)
            self.name = None
            return
        self.storage = LocalRing.from_history(
            state["values"], state["counts"], state["max_length"], Totals(*state["totals"])
        )
        self.name = state["name"]

    def __reduce_ex__(self, protocol: int) -> Any:
        """Pickle as MMEngine's HistoryBuffer in a process that uses MMEngine, else as this class.

        A checkpoint that MMEngine's Runner saves then loads where shmlog is
        not installed (see ``shmlog.stats.portable``).
        """
        cls = mmengine_class(HistoryBuffer)
        if cls is None:
            return super().__reduce_ex__(protocol)
        values, counts = self.storage.tail(None)
        history = History(values, counts, self.storage.max_length, self.storage.totals())
        return reduce_as(cls, history)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> HistoryBuffer:
        copy = HistoryBuffer.__new__(HistoryBuffer)
        copy.__setstate__(self.__getstate__())
        return copy

    # A copy owns its records, as a pickled one does (and stays this class).
    __copy__ = __deepcopy__

    @classmethod
    def adopt(cls, buffer: Any) -> HistoryBuffer | None:
        """``buffer`` as a shmlog HistoryBuffer: itself, or a copy of an MMEngine one.

        None for anything else.  An MMEngine buffer saved from shmlog keeps
        the global statistics of every update (see ``shmlog.stats.portable``).
        """
        if isinstance(buffer, HistoryBuffer):
            return buffer
        history = read_history(buffer)
        if history is None:
            return None
        adopted = cls.__new__(cls)
        adopted.storage = _ring(history)
        adopted.name = None
        return adopted

    def __repr__(self) -> str:
        totals = self.storage.totals()
        name = f" {self.name!r}" if self.name else ""
        return (
            f"<HistoryBuffer{name} retained={self.storage.retained()} "
            f"updates={totals.updates} max_length={self.storage.max_length}>"
        )


_EMPTY = np.empty(0, dtype=np.float64)


def _ring(history: History) -> LocalRing:
    max_length = max(int(history.max_length), 1)
    values, counts = history.values[-max_length:], history.counts[-max_length:]
    return LocalRing.from_history(values, counts, max_length, history.totals)


def history_array(data: Any, what: str) -> np.ndarray:
    """``data`` as a 1-D float64 array: the numbers of an initial history.

    Arrays, tensors and (nested) lists of numbers convert in one step, so a
    history of a million values costs milliseconds; anything else is read
    element by element, and the first element that is not a number names
    the problem.
    """
    detach = getattr(data, "detach", None)
    if callable(detach) and callable(getattr(data, "numpy", None)):  # a tensor
        data = detach().cpu().numpy()
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise InvalidType(
            f"{what}: expected a sequence of numbers (list, tuple, array or tensor), got "
            f"{type(data).__name__} {data!r}"
        )
    if not isinstance(data, (np.ndarray, list, tuple)):
        data = list(data)  # any other iterable, read once
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        raise InvalidValue(
            f"{what}: expected numbers nested to one depth (like an array), got "
            f"{_short(data)}"
        ) from None
    if array.dtype.kind in "iuf" and not (
        isinstance(data, (list, tuple)) and array.ndim == 1
        and any(isinstance(v, (bool, np.bool_)) for v in data)
    ):
        return array.astype(np.float64).reshape(-1)
    # Mixed kinds (numpy scalars, tensors, ...) or not numbers at all: one by
    # one, so that to_float names the first element it refuses, and why.
    items = _flatten(data) if isinstance(data, (list, tuple)) else array.reshape(-1).tolist()
    return np.array([to_float(item, what=f"{what} value") for item in items], dtype=np.float64)


def _flatten(data: Any) -> Any:
    for item in data:
        if isinstance(item, (list, tuple, np.ndarray)):
            yield from _flatten(item)
        else:
            yield item


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

for _builtin in (HistoryBuffer.min, HistoryBuffer.max, HistoryBuffer.current, HistoryBuffer.mean):
    HistoryBuffer._statistics_methods[_builtin.__name__] = _builtin

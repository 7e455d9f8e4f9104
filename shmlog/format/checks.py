"""Checks of LogProcessor's arguments and ``custom_cfg``, with errors that say what is wrong.

A bad config must fail when the LogProcessor is built (in the training
process, or in ``shmlog.init`` for the log writer's), naming the entry, the
value and what would have been accepted, rather than in the middle of a run.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidType, InvalidValue

MODES = ("train", "val", "test")

# Keys every custom_cfg entry understands; anything else goes to the method.
_DATA_SRC, _METHOD, _LOG_NAME, WINDOW = "data_src", "method_name", "log_name", "window_size"
REDUCE = "reduce"
_KNOWN_KEYS = (_DATA_SRC, _METHOD, _LOG_NAME, WINDOW, REDUCE)
# How a ``reduce`` entry combines the ranks' statistics (shmlog.format.reduce).
REDUCES = ("mean", "sum", "min", "max")
_SPECIAL_WINDOWS = ("epoch", "global")
NO_WINDOW = object()  # the entry has no window_size key: the method gets none
MISSING = object()


class Statistic(NamedTuple):
    """One validated ``custom_cfg`` entry."""

    data_src: str
    log_name: str
    method_name: str
    window: Any  # NO_WINDOW, None, an int >= 1, 'epoch' or 'global'
    kwargs: dict[str, Any]
    reduce: str | None = None  # over every rank of the job: one of REDUCES


def check_mode(mode: Any, allowed: Sequence[str], where: str) -> None:
    if mode not in allowed:
        raise InvalidValue(f"{where} mode: expected one of {list(allowed)}, got {mode!r}")


def required(name: str, value: int | None) -> int:
    if value is None:
        raise InvalidValue(f"{name} is needed for this line, got None")
    return non_negative_int(name, value)


# -- argument validation --------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is one (not a bool) and ``>= minimum``."""
    if not is_int(value):
        raise InvalidType(
            f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise InvalidValue(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    return int_at_least(name, value, 1)


def non_negative_int(name: str, value: Any) -> int:
    return int_at_least(name, value, 0)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidType(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def compile_pattern(name: str, pattern: Any) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise InvalidType(
            f"{name}: expected a regular expression string, got {type(pattern).__name__} "
            f"{pattern!r}"
        )
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InvalidValue(
            f"{name}: {pattern!r} is not a valid regular expression ({error})"
        ) from None


def parse_custom_cfg(
    custom_cfg: Any, by_epoch: bool
) -> tuple[list[dict[str, Any]], tuple[Statistic, ...]]:
    """Validate ``custom_cfg``; return a private copy and the parsed entries."""
    if custom_cfg is None:
        return [], ()
    if isinstance(custom_cfg, (str, bytes, Mapping)) or not isinstance(custom_cfg, Sequence):
        raise InvalidType(
            f"custom_cfg: expected a list of dicts or None, got {type(custom_cfg).__name__} "
            f"{custom_cfg!r}"
        )
    entries: list[dict[str, Any]] = []
    windows: list[Any] = []
    seen: dict[str, int] = {}
    # MMEngine's own checks first, over every entry (data_src, repeated names,
    # windows), so that the error names that problem; then what shmlog
    # checks on top (method_name).
    for index, entry in enumerate(custom_cfg):
        where = f"custom_cfg[{index}]"
        if not isinstance(entry, Mapping):
            raise InvalidType(f"{where}: expected a dict, got {type(entry).__name__} {entry!r}")
        entry = dict(entry)
        if _DATA_SRC not in entry:
            raise InvalidValue(f"{where}: the entry needs a {_DATA_SRC!r} key, got {entry!r}")
        _check_names(where, entry, (_DATA_SRC, _LOG_NAME))
        data_src = entry[_DATA_SRC]
        log_name = entry.get(_LOG_NAME, data_src)
        if log_name in seen:
            raise InvalidValue(
                f"{where}: log_name {log_name!r} (for data_src {data_src!r}) is already "
                f"produced by custom_cfg[{seen[log_name]}]; each log_name may appear once, "
                f"and an entry without log_name replaces its data_src, which may happen "
                f"only once. Give the entry a distinct log_name."
            )
        seen[log_name] = index
        windows.append(parse_window(where, entry.get(WINDOW, NO_WINDOW), by_epoch))
        entries.append(entry)
    statistics: list[Statistic] = []
    for index, (entry, window) in enumerate(zip(entries, windows)):
        where = f"custom_cfg[{index}]"
        if _METHOD not in entry:
            raise InvalidValue(f"{where}: the entry needs a {_METHOD!r} key, got {entry!r}")
        _check_names(where, entry, (_METHOD,))
        kwargs = {k: v for k, v in entry.items() if k not in _KNOWN_KEYS}
        reduce = entry.get(REDUCE)
        if reduce is not None and reduce not in REDUCES:
            raise InvalidValue(
                f"{where}['reduce']: expected one of {list(REDUCES)} (the statistic over "
                f"every rank of the job), or no 'reduce' for this rank's own, got {reduce!r}"
            )
        data_src = entry[_DATA_SRC]
        statistics.append(Statistic(data_src, entry.get(_LOG_NAME, data_src), entry[_METHOD],
                                    window, kwargs, reduce))
    return entries, tuple(statistics)


def _check_names(where: str, entry: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise InvalidType(
                f"{where}[{key!r}]: expected a non-empty str, got "
                f"{type(entry[key]).__name__} {entry[key]!r}"
            )


def parse_window(where: str, window: Any, by_epoch: bool) -> Any:
    if window is NO_WINDOW or window is None:
        return window
    if isinstance(window, str):
        if window not in _SPECIAL_WINDOWS:
            raise InvalidValue(
                f"{where}['window_size']: expected an int >= 1, 'epoch' or 'global', "
                f"got {window!r}"
            )
        if window == "epoch" and not by_epoch:
            raise InvalidValue(
                f"{where}['window_size']: 'epoch' needs by_epoch=True (this LogProcessor "
                f"has by_epoch=False); use an int or 'global'"
            )
        return window
    if not is_int(window):
        raise InvalidType(
            f"{where}['window_size']: expected an int >= 1, 'epoch' or 'global', got "
            f"{type(window).__name__} {window!r}"
        )
    if window < 1:
        raise InvalidValue(
            f"{where}['window_size']: expected an int >= 1, 'epoch' or 'global', got {window!r}"
        )
    return int(window)

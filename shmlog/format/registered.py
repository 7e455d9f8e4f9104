"""Statistics registered with ``HistoryBuffer.register_statistics``, wherever the line is made.

A statistic is registered in the process that imports the code defining
it.  The log writer that makes the master log's lines may be another
process (the default sidecar), which never imported that code, so a
``custom_cfg`` entry whose method is not one of HistoryBuffer's own
statistics is computed where it is known: ``shmlog.report_progress``, in
the logging process, puts the value of each such entry into the step's
progress marker (``shmlog.wire.Progress.computed``),
and the writer's LogProcessor takes it from there when the method is
unknown to its own process.  The thread writer, and MMEngine's Runner,
which make the lines in the logging process, compute it themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidValue
from ..stats.history_buffer import HistoryBuffer
from ..wire import COMPUTED_INFO, REDUCED_INFO_KEY

# HistoryBuffer's own statistics: known in every process.
BUILT_IN = frozenset({"mean", "min", "max", "current"})


def plain(value: Any) -> Any:
    """``value`` as plain data that crosses to the writer (numpy numbers as Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def check_known(custom_cfg: Any, where: str = "log_processor") -> None:
    """Refuse a ``custom_cfg`` entry whose ``method_name`` this process does not know.

    ``shmlog.init`` checks the session's config so: a statistic is found by
    the log writer only if the process that logs knows it (see the module
    docstring), and an unknown one would fail every line of the run.
    """
    for index, entry in enumerate(custom_cfg or ()):
        method = entry.get("method_name") if isinstance(entry, dict) else None
        if not isinstance(method, str) or method in BUILT_IN \
                or HistoryBuffer.knows_statistic(method):
            continue
        known = sorted(BUILT_IN | set(HistoryBuffer.statistic_names()))
        raise InvalidValue(
            f"{where}: custom_cfg[{index}]['method_name'] {method!r} (data_src "
            f"{entry.get('data_src')!r}) is not a HistoryBuffer statistic in this process: "
            f"expected one of {known}, or a method registered with "
            f"HistoryBuffer.register_statistics before shmlog.init"
        )


class RegisteredStatistics:
    """The part of LogProcessor that computes registered statistics where they are known."""

    def registered_values(
        self, message_hub: Any, mode: str, batch_idx: int, iter: int
    ) -> dict[str, Any]:
        """The value of each ``mode`` entry whose method is not built in, by log name."""
        found: dict[str, Any] = {}
        scalars = None
        for stat in self._statistics:
            if stat.method_name in BUILT_IN:
                continue
            if scalars is None:
                scalars = self._mode_scalars(message_hub.log_scalars, mode)
            buffer = scalars.get(stat.data_src)
            if buffer is not None:
                kwargs = self._statistic_kwargs(stat, batch_idx, iter)
                found[stat.log_name] = plain(buffer.statistics(stat.method_name, **kwargs))
        return found

    def _statistic(self, buffer: HistoryBuffer, stat: Any, kwargs: dict[str, Any],
                   message_hub: Any, step: tuple) -> Any:
        """``stat``'s value: computed here when its method is known here, else as the
        logging process computed it for ``step``."""
        if stat.method_name in BUILT_IN or HistoryBuffer.knows_statistic(stat.method_name):
            return buffer.statistics(stat.method_name, **kwargs)
        get_info = getattr(message_hub, "get_info", None)
        reduced = None if get_info is None else get_info(REDUCED_INFO_KEY, None)
        if isinstance(reduced, dict) and tuple(reduced.get("step") or ()) == tuple(step):
            computed = reduced.get(COMPUTED_INFO) or {}
            if stat.log_name in computed:
                return computed[stat.log_name]
        return buffer.statistics(stat.method_name, **kwargs)  # raises, naming the method

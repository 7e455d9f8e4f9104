"""Statistics over every rank of a job: what each rank contributes, and how that combines.

A ``custom_cfg`` entry of LogProcessor with ``reduce='mean' | 'sum' | 'min' |
'max'`` shows its statistic over every rank of the job instead of the
logging rank's own.  Each rank computes the entry's statistic over its own
window, as it would without ``reduce``, and contributes a *share*: six
numbers that add up across ranks (and across nodes) in any order:

    weighted sum  statistic x weight    weight  the counts in the window
    sum           statistic             min     statistic    max  statistic
    ranks         1

``mean`` is the count-weighted mean of the ranks' statistics (weighted sum
over weight), which for ``method_name='mean'`` is exactly the mean over the
union of the ranks' windows; ``sum``, ``min`` and ``max`` combine the ranks'
statistics as their names say.  Shares are plain lists of floats, so they
cross processes (shared memory, torch.distributed) as they are.

The exchange itself is not here (this layer has no processes): LogProcessor
asks its ``exchange`` for the job's shares once per logging step, or finds
them ready in the hub's runtime info (``shmlog.wire.REDUCED_INFO_KEY``);
without either it shows the rank's own statistic, the job of one rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..stats.history_buffer import HistoryBuffer
from ..wire import REDUCED_INFO_KEY
from .checks import WINDOW

__all__ = ["JobStatistics", "add", "empty", "share", "share_of", "value", "window_weight"]

Share = list  # [weighted sum, weight, sum, min, max, ranks]


def share(statistic: float, weight: float) -> Share:
    statistic = float(statistic)
    return [statistic * weight, float(weight), statistic, statistic, statistic, 1.0]


def empty() -> Share:
    return [0.0, 0.0, 0.0, math.inf, -math.inf, 0.0]


def add(a: Share, b: Share) -> Share:
    return [a[0] + b[0], a[1] + b[1], a[2] + b[2], min(a[3], b[3]), max(a[4], b[4]), a[5] + b[5]]


def value(reduce: str, total: Share) -> float:
    """The job-wide statistic ``reduce`` of the combined ``total``."""
    if total[5] == 0:
        return math.nan
    if reduce == "mean":
        return total[0] / total[1] if total[1] else total[2] / total[5]
    if reduce == "sum":
        return total[2]
    return total[3] if reduce == "min" else total[4]


def share_of(statistic: float, buffer: HistoryBuffer, window: Any) -> Share:
    """The share of ``statistic``, computed over the last ``window`` updates of ``buffer``."""
    return share(statistic, window_weight(buffer, window))


def window_weight(buffer: HistoryBuffer, window: Any) -> float:
    """The sum of the counts of the last ``window`` updates (None: of every update)."""
    totals = buffer.totals()
    if window is None or window >= totals.updates:
        return float(totals.count_sum)
    _values, counts, _complete = buffer.storage.window(int(window))
    return float(counts.sum())


# exchange(step, shares) -> the job's shares by log name, or None on a rank
# that only contributes (it shows its own statistics).
Exchange = Callable[[tuple, dict[str, Share]], "dict[str, Share] | None"]


class JobStatistics:
    """The part of LogProcessor that shows ``reduce`` entries over the whole job."""

    # Set by whoever runs the job (shmlog.api.reduce); None: this rank alone.
    exchange: Exchange | None = None

    def has_job_statistics(self) -> bool:
        """Whether any ``custom_cfg`` entry has ``reduce``."""
        return any(stat.reduce is not None for stat in self._statistics)

    def job_shares(
        self, message_hub: Any, mode: str, batch_idx: int, iter: int
    ) -> dict[str, tuple[str, Share]]:
        """This rank's share of each ``reduce`` entry of ``mode``'s lines, by log name."""
        scalars = self._mode_scalars(message_hub.log_scalars, mode)
        shares = {}
        for stat in self._statistics:
            buffer = scalars.get(stat.data_src)
            if stat.reduce is None or buffer is None:
                continue
            kwargs = self._statistic_kwargs(stat, batch_idx, iter)
            statistic = buffer.statistics(stat.method_name, **kwargs)
            shares[stat.log_name] = (stat.reduce, share_of(statistic, buffer, kwargs.get(WINDOW)))
        return shares

    def _job_values(
        self, message_hub: Any, step: tuple, shares: Mapping[str, tuple[str, Share]]
    ) -> dict[str, float]:
        """The job-wide value of each reduced entry, by log name."""
        if not shares:
            return {}
        ready = _ready(message_hub, step)
        if ready is not None and all(name in ready for name in shares):
            return {name: ready[name] for name in shares}
        total = None
        if self.exchange is not None:
            total = self.exchange(step, {name: s for name, (_r, s) in shares.items()})
        if total is None:
            total = {name: s for name, (_r, s) in shares.items()}
        return {name: value(reduce, total.get(name, empty()))
                for name, (reduce, _s) in shares.items()}


def _ready(message_hub: Any, step: tuple) -> dict[str, float] | None:
    """Values exchanged for ``step`` already (by ``report_progress`` or a hook)."""
    get_info = getattr(message_hub, "get_info", None)
    if get_info is None:
        return None
    reduced = get_info(REDUCED_INFO_KEY, None)
    if not isinstance(reduced, dict) or tuple(reduced.get("step") or ()) != tuple(step):
        return None
    values = reduced.get("values")
    return values if isinstance(values, dict) else None

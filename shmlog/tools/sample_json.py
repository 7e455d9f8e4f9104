"""``shmlog top --json``: one sample of a session as a JSON document, for scripts.

The document (``version`` 1; docs/operations.md shows one)::

    {"version": 1, "session": str, "time": unix seconds, "window": int,
     "members": int, "writers_alive": int, "writers_total": int,
     "writers": {label: alive}, "dropped_log_records": int,
     "log_rings": [{"writer": label, "alive": bool, "dropped": int, "backlog_bytes": int}],
     "progress": {hub: {"iter": ..., "max_iters": ..., "epoch": ..., "max_epochs": ..., "eta": ...,
                        "job_workers": {"node<N>/rank<r>/worker<w>": seconds}}},
     "scalars": [{"hub": str, "key": str, <statistics>,
                  "writers": [{"writer": label, "alive": bool, <statistics>}]}]}

where ``<statistics>`` are ``updates``, ``current``, ``mean`` (over the last
``window`` updates), ``rate`` (updates per second), ``age`` (seconds since
the newest update), ``value_sum``, ``count_sum``, ``min`` and ``max`` (over
every update).  A statistic with no value (no update yet) is null; NaN and
infinities, which JSON cannot hold, are the strings ``"NaN"``, ``"+Inf"``
and ``"-Inf"``.  ``job_workers`` (every node's DataLoader workers' window
mean of ``worker_data_time``) is there only when the LogProcessor config has
``reduce`` entries, on the logging rank's node.  Scalars are sorted by hub
and key, writers by label.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..format.sample import KeyStat, Sample, WriterStat

VERSION = 1


def _number(value: float | None) -> float | str | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def _plain(value: Any) -> Any:
    """Runtime info made JSON data: numpy values as numbers, anything else as text."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _statistics(stat: KeyStat | WriterStat, taken_ns: int) -> dict[str, Any]:
    totals = stat.totals
    some = totals.updates > 0
    return {
        "updates": stat.updates,
        "current": _number(stat.current),
        "mean": _number(stat.mean),
        "rate": _number(stat.rate),
        "age": None if stat.last_ns is None else max(0.0, (taken_ns - stat.last_ns) / 1e9),
        "value_sum": _number(totals.value_sum),
        "count_sum": _number(totals.count_sum),
        "min": _number(totals.minimum) if some else None,
        "max": _number(totals.maximum) if some else None,
    }


def as_data(sample: Sample) -> dict[str, Any]:
    """The document of the module docstring for ``sample``."""
    scalars = []
    for stat in sample.keys:
        writers = [
            {"writer": w.label, "alive": w.alive, **_statistics(w, sample.taken_ns)}
            for w in stat.writers
        ]
        scalars.append({"hub": stat.hub, "key": stat.key, **_statistics(stat, sample.taken_ns),
                        "writers": writers})
    return {
        "version": VERSION,
        "session": sample.session,
        "time": sample.wall,
        "window": sample.window,
        "members": sample.members,
        "writers_alive": sample.writers_alive,
        "writers_total": sample.writers_total,
        "writers": dict(sorted(sample.writer_states.items())),
        "dropped_log_records": sample.dropped_log_records,
        "log_rings": [
            {"writer": r.label, "alive": r.alive, "dropped": r.dropped, "backlog_bytes": r.backlog}
            for r in sample.log_rings
        ],
        "progress": {hub: _plain(values) for hub, values in sorted(sample.progress.items())},
        "scalars": scalars,
    }


def dumps(sample: Sample) -> str:
    """``sample`` as strict JSON text (no NaN literal), one document."""
    return json.dumps(as_data(sample), indent=2, allow_nan=False)

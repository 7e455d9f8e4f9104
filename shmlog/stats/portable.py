"""HistoryBuffers that MMEngine can load, and MMEngine's that shmlog can.

A checkpoint must load where it is loaded: an MMEngine Runner saves its
MessageHub's buffers with ``torch.save``, and the checkpoint is read by
processes with or without shmlog installed.  So in a process that uses
MMEngine (``mmengine.logging.history_buffer`` is imported), shmlog's
HistoryBuffer pickles as MMEngine's own class with MMEngine's state
(``max_length``, ``_log_history``, ``_count_history``), which MMEngine
restores with its own ``__setstate__``.  Elsewhere it pickles as itself.

MMEngine's state keeps only the retained records.  shmlog's global
statistics also cover records the ring dropped, so when there are such
records their running totals travel along as ``_shmlog_totals``, a tuple of
plain numbers that MMEngine carries as an unused attribute.  MMEngine may
append to a buffer it loaded and save it again; the totals are used only if
the retained records are still the ones they were saved with.

Everything crosses as plain data: importing this module imports neither
MMEngine nor torch.
"""

from __future__ import annotations

import copyreg
import sys
from typing import Any, NamedTuple

import numpy as np

from .storage import Totals

MMENGINE_MODULE = "mmengine.logging.history_buffer"
TOTALS_ATTR = "_shmlog_totals"


class History(NamedTuple):
    """What a buffer holds, whoever's class it was."""

    values: np.ndarray
    counts: np.ndarray
    max_length: int
    totals: Totals | None  # None: compute from the records


def mmengine_class(ours: type) -> type | None:
    """MMEngine's HistoryBuffer class if this process uses MMEngine, else None.

    None too when MMEngine's module name stands for shmlog's own class (as it
    does when MMEngine's tests run against shmlog): pickling by that name
    would then find ``ours``.
    """
    module = sys.modules.get(MMENGINE_MODULE)
    cls = getattr(module, "HistoryBuffer", None)
    if not isinstance(cls, type) or cls is ours or issubclass(cls, ours):
        return None
    if cls.__module__ != MMENGINE_MODULE:
        return None
    return cls


def reduce_as(cls: type, history: History) -> tuple:
    """A pickle reduction that rebuilds ``history`` as a ``cls`` (MMEngine's class)."""
    # copyreg's reconstructor (what plain objects pickle with at protocol 0 and 1):
    # pickle's NEWOBJ would insist that the class is the pickled object's own.
    return copyreg._reconstructor, (cls, object, None), mmengine_state(history)  # type: ignore[attr-defined]


def rebuild_as(cls: type, history: History) -> Any:
    """``history`` as an instance of ``cls`` (MMEngine's class), restored by its ``__setstate__``."""
    buffer = cls.__new__(cls)
    buffer.__setstate__(mmengine_state(history))
    return buffer


def mmengine_state(history: History) -> dict[str, Any]:
    """MMEngine's HistoryBuffer state for ``history`` (see the module docstring)."""
    state: dict[str, Any] = {
        "max_length": int(history.max_length),
        "_log_history": np.array(history.values, dtype=np.float64),
        "_count_history": np.array(history.counts, dtype=np.float64),
    }
    totals = history.totals
    if totals is not None and totals.updates > len(history.values):
        # (retained, their value sum, their count sum) then the totals of every update.
        state[TOTALS_ATTR] = (
            len(history.values), float(np.sum(history.values)), float(np.sum(history.counts)),
            *(float(x) for x in totals),
        )
    return state


def read_history(obj: Any) -> History | None:
    """The history held by an MMEngine HistoryBuffer, or by its state dict; None if neither."""
    state = obj if isinstance(obj, dict) else getattr(obj, "__dict__", None)
    if not isinstance(state, dict) or "_log_history" not in state or "_count_history" not in state:
        return None
    values = np.asarray(state["_log_history"], dtype=np.float64).reshape(-1)
    counts = np.asarray(state["_count_history"], dtype=np.float64).reshape(-1)
    max_length = int(state.get("max_length", max(len(values), 1)))
    return History(values, counts, max_length, _saved_totals(state.get(TOTALS_ATTR), values, counts))


def _saved_totals(saved: Any, values: np.ndarray, counts: np.ndarray) -> Totals | None:
    if not isinstance(saved, tuple) or len(saved) != 8:
        return None
    retained, value_sum, count_sum, *totals = saved
    unchanged = (
        retained == len(values) and value_sum == float(np.sum(values))
        and count_sum == float(np.sum(counts))
    )
    return Totals(int(totals[0]), *map(float, totals[1:])) if unchanged else None


def mmengine_statistic(name: str, ours: type) -> Any:
    """A statistic registered on MMEngine's HistoryBuffer (``register_statistics``), or None.

    Such a method reads ``self._log_history`` and ``self._count_history``,
    which shmlog's buffers have too.
    """
    cls = mmengine_class(ours)
    methods = getattr(cls, "_statistics_methods", None)
    return methods.get(name) if isinstance(methods, dict) else None

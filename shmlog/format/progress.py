"""When a training step is logged, and how long the run has left.

Used by the code that decides to log (``shmlog.report_progress``), by the log
writer that formats the line, and by ``shmlog top``: one rule each, so the
three never disagree.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from ..wire import Progress


def progress_due(progress: Progress, interval: int, by_epoch: bool) -> bool:
    """Whether MMEngine's LoggerHook would log at this step (``ignore_last`` default)."""
    if progress.event == "epoch_end":
        return True
    if progress.mode == "train" and not by_epoch:
        return (progress.iter + 1) % interval == 0
    return (progress.batch_idx + 1) % interval == 0


def shown_epoch(mode: str, epoch: int, training: bool, max_epochs: int | None = None) -> int:
    """The epoch as MMEngine's lines show it, from ``epoch`` as ``runner.epoch`` counts it.

    During training ``epoch`` counts the epochs finished (MMEngine's
    ``runner.epoch``, and the ``epoch`` runtime info its RuntimeInfoHook
    sets before each training epoch), so the line shows the running one,
    ``epoch + 1``, never beyond ``max_epochs``.  Validation runs after the
    counter moved on and shows ``epoch`` itself; outside training (a val or
    test run alone) the epoch is 0.
    """
    if mode == "train":
        shown = int(epoch) + 1
        return shown if max_epochs is None else min(shown, int(max_epochs))
    return int(epoch) if training else 0


def eta_seconds(mean_iter_seconds: float, iter: int, max_iters: int) -> float:
    """Seconds left after iteration ``iter`` (0-based) of ``max_iters`` at the given pace."""
    return float(mean_iter_seconds) * max(int(max_iters) - int(iter) - 1, 0)


def eta_of(time_history: Any, iter: int, max_iters: int) -> float:
    """MMEngine's eta rule from the history of ``train/time`` (a HistoryBuffer).

    IterTimerHook's: the average iteration time since the run started (the
    mean of every update, exact from the running totals) times the
    iterations left.  Where an IterTimerHook runs, its ``eta`` info is used
    instead; this is for loops that only log ``train/time``.
    """
    return eta_seconds(time_history.mean(), iter, max_iters)


def format_eta(eta: Any) -> str:
    """Seconds as MMEngine prints its eta: ``H:MM:SS`` (``1 day, H:MM:SS`` beyond)."""
    try:
        seconds = float(eta)
    except (TypeError, ValueError):
        return str(eta)
    if not math.isfinite(seconds):
        return "-"
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))

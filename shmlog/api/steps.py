"""``shmlog.log_step``: a plain PyTorch loop logs one step in one call.

MMEngine's Runner updates the hub's scalars and its loop state for the
LoggerHook; a hand-written loop gets the same from one call per iteration:
the step's scalars (prefixed with the mode, as MMEngine's ``train/loss``),
then :func:`shmlog.report_progress` with the iteration, epoch and position
in the epoch.  What does not change during a run (``dataloader_len``,
``max_iters``, ``max_epochs``) is given once and remembered, per session,
hub and mode, in this process; the iteration counts itself unless given.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidType
from .message_hub import MessageHub
from .process import PROCESS
from .progress import report_progress

_LENGTHS = ("dataloader_len", "max_iters", "max_epochs")
# (session, hub, mode) -> {"iter": next iteration, and the lengths given so far}
_STATE: dict[tuple[str, str, str], dict[str, Any]] = {}


def log_step(
    scalars: dict[str, Any],
    *,
    mode: str = "train",
    iter: int | None = None,
    epoch: int | None = None,
    batch_idx: int | None = None,
    dataloader_len: int | None = None,
    max_iters: int | None = None,
    max_epochs: int | None = None,
    hub: str | None = None,
) -> None:
    """Log one iteration's ``scalars`` and tell the log writer where the loop is.

    ``scalars``: name -> number (a float, an int, a one-element tensor or
    array), or ``dict(value=..., count=...)``; a name without ``/`` gets the
    mode's prefix (``loss`` -> ``train/loss``).  ``iter``: iterations done
    before this one (default: one more than the last call's, from 0);
    ``epoch``: epochs done (default: ``iter // dataloader_len``);
    ``batch_idx``: the position in the epoch (default: ``iter %
    dataloader_len``).  ``hub``: the session's hub by default.
    """
    if not isinstance(scalars, dict):
        raise InvalidType(f"log_step: scalars: expected a dict, got {type(scalars).__name__}")
    session = PROCESS.current()
    name = hub or (session.options.get("hub", "mmengine") if session is not None else "mmengine")
    prefix = f"{mode}/"
    MessageHub.get_instance(name).update_scalars(
        {(key if "/" in key else prefix + key): value for key, value in scalars.items()})
    state = _STATE.setdefault((session.name if session is not None else "", name, mode),
                              {"iter": 0})
    given = {"dataloader_len": dataloader_len, "max_iters": max_iters, "max_epochs": max_epochs}
    state.update((k, v) for k, v in given.items() if v is not None)
    step = state["iter"] if iter is None else int(iter)
    length = state.get("dataloader_len")
    if epoch is None:
        epoch = step // length if length else 0
    if batch_idx is None:
        batch_idx = step % length if length else step
    report_progress(mode, batch_idx, iter=step, epoch=epoch, hub=name,
                    **{k: state.get(k) for k in _LENGTHS})
    state["iter"] = step + 1

"""``shmlog.report_progress``: where the training loop is, for the log writer and ``top``.

At every logging step (the rule of MMEngine's LoggerHook,
``shmlog.format.progress.progress_due``) the step is stored as runtime info
of the hub (``shmlog.wire.PROGRESS_KEY``), where ``shmlog top`` reads it,
and, when the session has a ``log_processor``, put into this process's
record ring as a progress marker, where the log writer formats MMEngine's
line for it.
"""

from __future__ import annotations

import time

from ..format.progress import progress_due
from ..wire import PROGRESS_KEY, Progress
from .message_hub import MessageHub
from .process import PROCESS
from .record_handler import ship_progress


def report_progress(
    mode: str,
    batch_idx: int,
    *,
    iter: int,
    epoch: int = 0,
    dataloader_len: int | None = None,
    max_iters: int | None = None,
    max_epochs: int | None = None,
    event: str = "iter",
    hub: str | None = None,
) -> None:
    """Tell the session's log writer where the training loop is.

    Call it after each iteration (``event='iter'``) and after a val/test
    loop (``event='epoch_end'``); the writer formats MMEngine's line for
    this state at every ``log_interval``.  ``iter`` is the number of
    training iterations done before this one (MMEngine's ``runner.iter``).
    """
    if event not in ("iter", "epoch_end"):
        raise ValueError(f"event: expected 'iter' or 'epoch_end', got {event!r}")
    if mode not in ("train", "val", "test"):
        raise ValueError(f"mode: expected 'train', 'val' or 'test', got {mode!r}")
    session = PROCESS.current()
    options = {} if session is None else session._options
    progress = Progress(
        mode, int(batch_idx), int(iter), int(epoch), dataloader_len, max_iters, max_epochs,
        event, time.monotonic_ns(),
    )
    cfg = options.get("log_processor") or {}
    if not progress_due(progress, int(options.get("log_interval", 10)),
                        bool(cfg.get("by_epoch", True))):
        return
    name = hub or options.get("hub", "mmengine")
    MessageHub.get_instance(name).update_info(PROGRESS_KEY, progress._asdict(), resumed=False)
    if session is not None and cfg:
        ship_progress(session, progress)

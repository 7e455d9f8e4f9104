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
from typing import Any

from ..errors import InvalidValue
from ..format.log_processor import LogProcessor
from ..format.progress import progress_due
from ..format.reduce import empty, value
from ..stats.per_writer import per_writer_means
from ..wire import PROGRESS_KEY, Progress
from .config import Config
from .device import settle
from .message_hub import MessageHub
from .process import PROCESS, identity
from .record_handler import ship_progress
from .reduce import JobReducer


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

    The writer makes the lines of the logging rank (rank 0, or a process
    without a rank), from that rank's own scalars.  When the session's
    LogProcessor config has ``reduce`` entries, every rank must call this at
    every step: at a logging step the ranks exchange their shares
    (``shmlog.api.reduce``), and rank 0's line shows the job's statistics.
    """
    if event not in ("iter", "epoch_end"):
        raise InvalidValue(f"event: expected 'iter' or 'epoch_end', got {event!r}")
    if mode not in ("train", "val", "test"):
        raise InvalidValue(f"mode: expected 'train', 'val' or 'test', got {mode!r}")
    session = PROCESS.current()
    options = {} if session is None else session.config
    progress = Progress(
        mode, int(batch_idx), int(iter), int(epoch), dataloader_len, max_iters, max_epochs,
        event, time.monotonic_ns(),
    )
    cfg = options.get("log_processor") or {}
    if not progress_due(progress, int(options.get("log_interval", 10)),
                        bool(cfg.get("by_epoch", True))):
        return
    # A logging step: values this process logged on a device land first (one wait),
    # and the step's time, as of which the writer reads the scalars, follows them.
    settle()
    progress = progress._replace(at_ns=time.monotonic_ns())
    name = hub or options.get("hub", "mmengine")
    message_hub = MessageHub.get_instance(name)
    processor = _processor(session, cfg)
    if processor is not None and processor.has_job_statistics():
        progress = progress._replace(reduced=_exchange(session, processor, message_hub, progress))
    me = identity()
    if processor is not None and (not me.distributed or me.rank == 0):
        progress = _with_registered(processor, message_hub, progress)
    # One rank per node says where the loop is (ranks of a node share the
    # info); local rank 0 also holds the job's figures when there are any.
    if not me.distributed or me.local_rank == 0:
        message_hub.update_info(PROGRESS_KEY, progress._asdict(), resumed=False)
    # The writer makes the lines of the master log: the logging rank's.
    if session is not None and cfg and (not me.distributed or me.rank == 0):
        ship_progress(session, progress)


def _processor(session: Any, cfg: dict[str, Any]) -> LogProcessor | None:
    """The session's LogProcessor, made once per process (for its ``reduce`` entries)."""
    if session is None or not cfg:
        return None
    made = getattr(session, "_processor", None)
    if made is None:
        made = session._processor = LogProcessor(**cfg)
        made.exchange = JobReducer(session, Config.from_env())
    return made


def _exchange(session: Any, processor: LogProcessor, hub: Any, progress: Progress) -> dict:
    """This step's job-wide values (and workers' data time), as every rank computes them."""
    shares = processor.job_shares(hub, progress.mode, progress.batch_idx, progress.iter)
    exchange = processor.exchange
    total = exchange(progress.step(), {n: s for n, (_r, s) in shares.items()},
                     _workers(hub, progress.mode, processor.window_size, exchange.config))
    if total is None:  # another rank of this node takes the job's figures
        total = {n: s for n, (_r, s) in shares.items()}
    values = {n: value(r, total.get(n, empty())) for n, (r, _s) in shares.items()}
    return {"values": values, "workers": dict(exchange.workers)}


def _with_registered(processor: LogProcessor, hub: Any, progress: Progress) -> Progress:
    """``progress`` with the values of registered statistics, which the writer may not know
    (``shmlog.format.registered``)."""
    values = processor.registered_values(hub, progress.mode, progress.batch_idx, progress.iter)
    if not values:
        return progress
    return progress._replace(computed=values)


def _workers(hub: Any, mode: str, window: int, config: Config) -> dict[str, float]:
    """This rank's writers' mean of ``<mode>/worker_data_time`` over the LogProcessor's
    window, by node and label."""
    try:
        buffer = hub.get_scalar(f"{mode}/worker_data_time")
    except KeyError:
        return {}
    node = f"node{config.node_rank}"
    means = per_writer_means(buffer, window, identity().slot_rank)
    return {f"{node}/{label}": mean for label, mean in means.items()}

"""ShmlogHook: an MMEngine Runner logging through a shmlog session.

Enabled by config alone::

    custom_imports = dict(imports=['shmlog.mmengine'], allow_failed_imports=False)
    custom_hooks = [dict(type='ShmlogHook')]

From ``before_run`` to ``after_run`` of each ``train()``/``val()``/``test()``:

1. this process is in a session: the one it is already in, or one every
   rank of the job opens under the same name (:func:`session_name`);
2. the Runner's MessageHub stores in the session (``shmlog.mmengine.hub``),
   so the scalars its DataLoader workers update reach it, and LoggerHook
   logs them with the rest (the window statistics over the rank's writers);
3. its DataLoader workers time their batches as ``<mode>/worker_data_time``
   and see the Runner's hub as their current one (``shmlog.mmengine.workers``);
4. its log files are written by the session's log writer, where MMEngine
   puts them (``shmlog.mmengine.logs``);
5. with shmlog's LogProcessor and ``reduce`` entries in its ``custom_cfg``,
   the ranks exchange their shares whenever LoggerHook asks for a line, and
   rank 0's line shows the job's statistics (``shmlog.api.reduce``);
6. whenever LoggerHook logs a training iteration, each of the rank's
   workers' ``worker_data_time`` (window mean) is exported to the vis
   backends as ``worker_data_time/<writer>`` (``worker_data_time/worker0``,
   ``worker_data_time/rank0/worker1`` under torchrun), in a record of its own
   with the same step.

``after_run`` undoes 2 and 4 (the hub keeps its values, as MMEngine's own
HistoryBuffers) and leaves a session the hook opened.  The priority is
LOWEST: ``before_run`` finds what other hooks set, and ``after_train_iter``
runs after LoggerHook's.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from mmengine.hooks import Hook, LoggerHook

from ..api.config import Config
from ..api.options import LOG_WRITERS, default_name
from ..api.process import ENV_SESSION, PROCESS, identity
from ..api.reduce import JobReducer
from ..api.session import current_session, init
from ..errors import InvalidType, InvalidValue
from ..format.reduce import JobStatistics
from ..stats.per_writer import per_writer_means
from . import logs
from .hub import share, unshare
from .workers import track_runner_loaders

KEY = "train/worker_data_time"
EXPORT_PREFIX = "worker_data_time/"


def session_name(runner: Any) -> str:
    """The session every rank of the Runner's job opens on this node.

    The launcher's when it names one (``SHMLOG_SESSION``, torchrun's run),
    else one derived from what the ranks share, the experiment name and the
    master port, else (one process) a name unique to this run.
    """
    if os.environ.get(ENV_SESSION) or os.environ.get("TORCHELASTIC_RUN_ID"):
        return default_name()
    port = os.environ.get("MASTER_PORT")
    if int(getattr(runner, "world_size", 1)) > 1 and port:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", str(runner.experiment_name))
        return f"mm-{port}-{stem}"[:64]
    return default_name()


class ShmlogHook(Hook):
    """Log an MMEngine Runner through a shmlog session (see the module docstring).

    Args:
        session: the session's name; default :func:`session_name`.
        worker_data_time: time each DataLoader worker's batches.
        export_workers: export each worker's ``worker_data_time`` at every
            logged training iteration.
        log_writer: who writes the log files when this hook opens the
            session (``shmlog.init``'s option).
    """

    priority = "LOWEST"

    def __init__(self, session: str | None = None, worker_data_time: bool = True,
                 export_workers: bool = True, log_writer: str = "sidecar") -> None:
        if session is not None and not isinstance(session, str):
            raise InvalidType(f"session: expected a session name (str) or None, got {session!r}")
        if log_writer not in LOG_WRITERS:
            raise InvalidValue(
                f"log_writer: expected one of {list(LOG_WRITERS)}, got {log_writer!r}")
        self.session = session
        self.worker_data_time = bool(worker_data_time)
        self.export_workers = bool(export_workers)
        self.log_writer = log_writer
        self._opened: Any = None
        self._swaps: logs.Swaps = []
        self._logger_hook: Any = None

    # -- the run ------------------------------------------------------------------------

    def before_run(self, runner: Any) -> None:
        active = current_session()
        if active is None:
            name = self.session or session_name(runner)
            self._opened = active = init(name, log_writer=self.log_writer)
        elif self.session is not None and active.name != self.session:
            warnings.warn(
                f"ShmlogHook: this process is in shmlog session {active.name!r}; it is used "
                f"instead of session={self.session!r}",
                stacklevel=2,
            )
        share(runner.message_hub)
        # Written by this process, before the handlers change: MMEngine writes
        # the model's initialisation report straight into the file next.
        runner.logger.info(f"shmlog: logging through session {active.name!r}")
        rank, world_size = logs.runner_rank(runner)
        self._swaps = logs.route_to_session(runner.logger, runner.log_dir, runner.timestamp,
                                            rank, world_size)
        if self.worker_data_time:
            track_runner_loaders(runner, runner.message_hub.instance_name)
        processor = runner.log_processor
        if isinstance(processor, JobStatistics) and processor.has_job_statistics():
            # Every rank's LoggerHook asks its LogProcessor for the line at the
            # same iterations: that is where the ranks exchange their shares.
            processor.exchange = JobReducer(active, Config.from_env())
        self._logger_hook = next((h for h in runner.hooks if isinstance(h, LoggerHook)), None)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if not (self.export_workers and runner.rank == 0 and self._logged(runner, batch_idx)):
            return
        values = worker_values(runner.message_hub, getattr(runner.log_processor, "window_size", 10))
        if values:
            runner.visualizer.add_scalars(values, step=runner.iter + 1)

    def after_run(self, runner: Any) -> None:
        from mmengine.logging import HistoryBuffer

        session = current_session()
        if session is not None:
            session.flush(everyone=False)
        logs.restore(runner.logger, self._swaps)
        self._swaps = []
        if isinstance(runner.log_processor, JobStatistics):
            runner.log_processor.exchange = None
        if PROCESS.shared_hub(runner.message_hub.instance_name) is not None:
            unshare(runner.message_hub, HistoryBuffer)
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def _logged(self, runner: Any, batch_idx: int) -> bool:
        """Whether LoggerHook logged this training iteration (its own rule)."""
        hook = self._logger_hook
        if hook is None:
            return False
        if hook.every_n_inner_iters(batch_idx, hook.interval):
            return True
        loader = runner.train_dataloader
        return hook.end_of_epoch(loader, batch_idx) and (
            not hook.ignore_last or len(loader) <= hook.interval)


def worker_values(hub: Any, window: int) -> dict[str, float]:
    """``worker_data_time/<writer>``: the window mean of each of this rank's DataLoader workers."""
    try:
        buffer = hub.get_scalar(KEY)
    except KeyError:
        return {}
    means = per_writer_means(buffer, window, identity().slot_rank)
    # DataLoader workers only: a rank's own process holds at most the history a
    # resume restored, which no worker adds to (it would plot as a frozen series).
    return {EXPORT_PREFIX + label: mean for label, mean in means.items()
            if label.split("/")[-1].startswith("worker")}

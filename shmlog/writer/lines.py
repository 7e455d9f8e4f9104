"""MMEngine's iteration and epoch lines, made by the log writer from shared state.

At every logging step the training loop's ``shmlog.report_progress`` puts a
progress marker into its record ring; when the writer reaches it (never
skipping one, in order with the log records around it), :class:`ProgressLines`
formats the line LogProcessor gives for the shared scalars *as they were when
the marker was put*, prints it, writes it to the master log file and exports
the step.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

from ..format.formatter import TERMINAL_DATEFMT, MMFormatter, TerminalHandler
from ..format.log_processor import LogProcessor
from ..format.progress import eta_of
from ..stats.shared_hub import SharedHub
from ..wire import COMPUTED_INFO, REDUCED_INFO_KEY, Progress, Route
from .drain import LogWriter
from .exports import Exports
from .sinks import LogSink

WORKER_KEY = "worker_data_time"  # per worker: shmlog.track_data_time


class ProgressLines:
    """Formats, prints, writes and exports the line of each progress marker."""

    def __init__(
        self,
        hub: SharedHub,
        processor_cfg: dict[str, Any],
        log_file: str | None,
        logger_name: str = "mmengine",
        export_dir: str | None = None,
        tensorboard: bool | None = None,
    ) -> None:
        self._hub = hub
        self.processor = LogProcessor(**processor_cfg)
        self._terminal = TerminalHandler(sys.stdout)
        self._terminal.setFormatter(MMFormatter(color=True, datefmt=TERMINAL_DATEFMT))
        self._logger_name = logger_name
        self._log_file = log_file
        self._file: LogSink | None = None
        self._export_dir = export_dir
        self._tensorboard = tensorboard
        self._exports: Exports | None = None

    def bind(self, writer: LogWriter) -> None:
        """Write lines and exports through ``writer``'s files, committed with its batches.

        The files are opened at the first line: a writer that never gets one
        (a node without rank 0, with its own ``<stem>_logs/``) makes none.
        """
        self._writer = writer

    def handle(self, progress: Progress, rank: int = -1) -> None:
        """Format, print, write and export the line for one progress marker of ``rank``."""
        try:
            tag, line = self._format(progress, rank)
        except (KeyError, ValueError, TypeError) as exc:
            line, tag = f"shmlog: cannot format the line for {progress._asdict()}: {exc}", None
        writer = self._open()
        # The line first: exports (and opening them) never hold it up.
        self._emit(line, reported_at(progress))
        if writer is not None and self._export_dir is not None:
            self._exports = Exports(writer, self._export_dir, self._tensorboard)
        if tag is not None and self._exports is not None:
            self._exports.write(tag, progress, self._workers(progress, rank))

    def _open(self) -> LogWriter | None:
        """Open the log file at the first line; returns the writer then, else None."""
        writer = getattr(self, "_writer", None)
        if writer is None:
            return None
        self._writer = None
        if self._log_file is not None:
            route = Route(self._log_file, False, 1, "w", None, logging.INFO)
            self._file = writer.sink_for(route, 0)
        return writer

    def _workers(self, p: Progress, rank: int) -> dict[str, float]:
        """Each DataLoader worker's window mean of ``<mode>/worker_data_time`` at the step.

        What the ranks exchanged when they did (every rank's workers), else
        the marker's rank's own workers, as they were at the marker's time.
        """
        if p.reduced and p.reduced.get("workers"):
            return {}  # Exports takes them from the exchange
        buffer = self._hub.log_scalars(until=p.at_ns, rank=rank).get(f"{p.mode}/{WORKER_KEY}")
        if buffer is None:
            return {}
        values = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a window longer than a small ring retains
            for label, writer in sorted(buffer.per_writer().items()):
                parts = label.split("/")
                if rank >= 0 and parts[0] != f"rank{rank}":
                    continue  # per_writer() lists every rank's
                if parts[-1].startswith("worker") and writer.totals().updates:
                    values[label] = float(writer.mean(self.processor.window_size))
        return values

    def _format(self, p: Progress, rank: int) -> tuple[dict, str]:
        view = _HubAsOf(self._hub, p, self.processor.window_size, rank)
        common = {
            "iter": p.iter, "epoch": p.epoch, "max_iters": p.max_iters,
            "max_epochs": p.max_epochs, "dataloader_len": p.dataloader_len,
        }
        if p.event == "epoch_end":
            return self.processor.format_epoch(view, p.mode, p.batch_idx, **common)
        return self.processor.format_iter(view, p.mode, p.batch_idx, **common)

    def _emit(self, line: str, created: float | None = None) -> None:
        record = logging.makeLogRecord({
            "name": self._logger_name, "msg": line, "levelno": logging.INFO,
            "levelname": "INFO",
        })
        if created is not None:
            # Stamped with when the step was reported, as MMEngine's line is
            # (it is logged then), not when the writer got to it: the line
            # sorts among the records around it.
            record.created = created
            record.msecs = (created - int(created)) * 1000
        self._terminal.handle(record)
        if self._file is not None:
            self._file.write_record(record)

    def close(self) -> None:
        if self._exports is not None:
            self._exports.close()
            self._exports = None


def reported_at(progress: Progress) -> float | None:
    """The wall-clock time ``progress`` was reported (its ``at_ns`` is CLOCK_MONOTONIC)."""
    if progress.at_ns is None:
        return None
    return time.time() - max(0, time.monotonic_ns() - progress.at_ns) / 1e9


class _HubAsOf:
    """The hub as LogProcessor reads it at a marker's time, with ``eta`` computed.

    Its scalars are read as they were when the marker was put (``at_ns``), so
    the line is the one the training process would have formatted then,
    however far behind the writer is.
    """

    def __init__(self, hub: SharedHub, progress: Progress, window: int, rank: int) -> None:
        self._hub = hub
        self._progress = progress
        # The marker's rank's own scalars, as that rank's LogProcessor reads them.
        self.log_scalars = hub.log_scalars(until=progress.at_ns, rank=rank)
        self._window = window

    def get_info(self, key: str, default: Any = None) -> Any:
        if key == "eta":
            return self._eta(default)
        if key == REDUCED_INFO_KEY:  # the job's statistics, exchanged at the step
            reduced, computed = self._progress.reduced, self._progress.computed
            if reduced is None and computed is None:
                return default
            return {"step": list(self._progress.step()), "values": (reduced or {}).get("values", {}),
                    COMPUTED_INFO: computed or {}}
        return self._hub.get_info(key, default)

    @property
    def runtime_info(self) -> Any:
        return self._hub.runtime_info()

    def _eta(self, default: Any) -> Any:
        buffer = self.log_scalars.get("train/time")
        max_iters = self._progress.max_iters
        if buffer is None or not max_iters:
            return self._hub.get_info("eta", default)
        return eta_of(buffer, self._progress.iter, max_iters)

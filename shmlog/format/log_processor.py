"""LogProcessor: turn a MessageHub's scalars into MMEngine 0.10's log lines.

Log parsers, dashboards and people read MMEngine's exact line format, so this
module reproduces it (``Epoch(train)  [2][ 5/20]  lr: ...``) together with the
``tag`` dict that goes to visualisation backends.  The formatting itself takes
plain numbers (:meth:`LogProcessor.format_iter`, :meth:`LogProcessor.format_epoch`)
so that a process holding no runner, such as one reading shared memory, can
produce the same lines.  It does no I/O and only touches statistics windows
and running totals, so its cost does not grow with the length of a history.
"""

from __future__ import annotations

import datetime
import re
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..stats.history_buffer import HistoryBuffer
from .checks import (
    MISSING,
    MODES,
    NO_WINDOW,
    WINDOW,
    Statistic,
    check_mode,
    compile_pattern,
    flag,
    non_negative_int,
    parse_custom_cfg,
    positive_int,
    required,
)
from .progress import shown_epoch as progress_epoch
from .reduce import JobStatistics, share_of
from .registered import RegisteredStatistics
from .runner_methods import RunnerMethods

DEFAULT_MEAN_PATTERN = r".*(loss|time|data_time|grad_norm).*"


class LogProcessor(RunnerMethods, JobStatistics, RegisteredStatistics):
    """Formats the scalars of one mode (train/val/test) as MMEngine 0.10 does.

    Args:
        window_size: how many recent updates the default mean covers.
        by_epoch: ``Epoch(...)`` lines (epoch-based training) or ``Iter(...)``.
        custom_cfg: extra or replacement statistics, a list of dicts with
            ``data_src`` (the key without its ``train/``/``val/``/``test/``
            prefix), ``method_name`` (a HistoryBuffer statistic), optionally
            ``log_name`` (a new entry; without it ``data_src`` is replaced) and
            ``window_size`` (an int, ``'epoch'`` for the updates of the
            current epoch, ``'global'`` for the last ``iter + 1`` updates)
            and ``reduce`` (``'mean'``, ``'sum'``, ``'min'`` or ``'max'``: the
            statistic over every rank of the job, see
            ``shmlog.format.reduce``); any other key is passed to the method.
        num_digits: digits after the decimal point of the values shown.
        log_with_hierarchy: whether ``tag`` keys keep their mode prefix
            (``train/loss`` instead of ``loss``).  The line never shows it
            after an iteration.
        mean_pattern: regular expression; keys (without prefix) it matches
            show the mean over ``window_size`` updates, the others their
            latest value.

    Invalid arguments raise TypeError or ValueError naming the entry, the
    value and what is accepted.

    Two pairs of methods produce ``(tag, log_str)``:

    * :meth:`get_log_after_iter` / :meth:`get_log_after_epoch` take a runner,
      as MMEngine's do, and ask it for every number through MMEngine's
      private methods (``_collect_scalars``, ``_get_epoch``, ...), which
      subclasses may override (``shmlog.format.runner_methods``);
    * :meth:`format_iter` / :meth:`format_epoch` take the same state as
      numbers and need no runner.  Both pairs build their lines with the
      same code.
    """

    def __init__(
        self,
        window_size: int = 10,
        by_epoch: bool = True,
        custom_cfg: Sequence[Mapping[str, Any]] | None = None,
        num_digits: int = 4,
        log_with_hierarchy: bool = False,
        mean_pattern: str | re.Pattern[str] = DEFAULT_MEAN_PATTERN,
    ) -> None:
        self.window_size = positive_int("window_size", window_size)
        self.by_epoch = flag("by_epoch", by_epoch)
        self.num_digits = non_negative_int("num_digits", num_digits)
        self.log_with_hierarchy = flag("log_with_hierarchy", log_with_hierarchy)
        self.mean_pattern = compile_pattern("mean_pattern", mean_pattern)
        self.custom_cfg = custom_cfg

    @property
    def custom_cfg(self) -> list[dict[str, Any]]:
        """A copy of the custom statistics configuration (a list of dicts)."""
        return [dict(entry) for entry in self._custom_cfg]

    @custom_cfg.setter
    def custom_cfg(self, custom_cfg: Sequence[Mapping[str, Any]] | None) -> None:
        self._custom_cfg, self._statistics = parse_custom_cfg(custom_cfg, self.by_epoch)

    def __repr__(self) -> str:
        return (
            f"LogProcessor(window_size={self.window_size}, by_epoch={self.by_epoch}, "
            f"custom_cfg={self._custom_cfg!r}, num_digits={self.num_digits}, "
            f"log_with_hierarchy={self.log_with_hierarchy}, "
            f"mean_pattern={self.mean_pattern.pattern!r})"
        )

    # -- runner-free API ------------------------------------------------------------

    def format_iter(
        self,
        message_hub: Any,
        mode: str,
        batch_idx: int,
        *,
        iter: int = 0,
        epoch: int = 0,
        dataloader_len: int | None = None,
        max_iters: int | None = None,
        max_epochs: int | None = None,
        memory: int | None = None,
    ) -> tuple[dict, str]:
        """``(tag, log_str)`` after iteration ``batch_idx`` of the ``mode`` loop.

        Args:
            message_hub: a MessageHub (anything with ``log_scalars`` and
                ``get_info``).
            mode: ``'train'``, ``'val'`` or ``'test'``.
            batch_idx: index of the batch just done in the current loop.
            iter: training iterations completed (``runner.iter``).
            epoch: training epochs completed (``runner.epoch``).
            dataloader_len: batches in the current loop; needed except for
                ``Iter(train)`` lines.
            max_iters, max_epochs: the training length.  Leaving both None
                means there is no training loop (a test-only run): ``tag``
                then has ``iter`` 0 and validation is epoch 0.
            memory: when given, shown as ``memory: N`` and put in ``tag``
                (the line MMEngine writes on CUDA machines).
        """
        check_mode(mode, MODES, "format_iter")
        batch_idx = non_negative_int("batch_idx", batch_idx)
        iter = non_negative_int("iter", iter)
        scalars = self._mode_scalars(message_hub.log_scalars, mode)
        log_tag = self._collect(scalars, self._statistics, batch_idx, iter, message_hub,
                                (mode, "iter", iter, batch_idx))
        tag = self._shown(log_tag, mode)
        training = max_iters is not None or max_epochs is not None
        if self.by_epoch:
            size = required("dataloader_len", dataloader_len)
            shown_epoch = max_shown = None
            if mode != "test":
                shown_epoch = progress_epoch(mode, epoch, training, max_epochs)
                max_shown = max_epochs if training else None
                tag["epoch"] = shown_epoch
            header = self._header(mode, batch_idx + 1, size, shown_epoch, max_shown)
        elif mode == "train":
            header = self._header(mode, iter + 1, required("max_iters", max_iters))
        else:
            header = self._header(mode, batch_idx + 1, required("dataloader_len", dataloader_len))
        tag["iter"] = iter + 1 if training else 0
        eta = message_hub.get_info("eta", MISSING)
        return tag, header + self._iter_body(mode, log_tag, tag, eta, memory)

    def format_epoch(
        self,
        message_hub: Any,
        mode: str,
        batch_idx: int,
        *,
        dataloader_len: int,
        iter: int = 0,
        epoch: int = 0,
        max_iters: int | None = None,
        max_epochs: int | None = None,
        with_non_scalar: bool = False,
    ) -> tuple[dict, str]:
        """``(tag, log_str)`` after a whole validation or test epoch.

        Arguments as in :meth:`format_iter` (``message_hub`` also needs
        ``runtime_info``); ``mode`` is ``'val'`` or ``'test'``.  ``time`` and
        ``data_time`` are averaged over the epoch (``batch_idx + 1`` updates)
        unless ``custom_cfg`` says otherwise, and come last.  Runtime info
        under the mode's prefix (non-scalar metrics) is shown in the line; it
        is put in ``tag`` only when ``with_non_scalar`` is true.
        """
        check_mode(mode, ("val", "test"), "format_epoch")
        batch_idx = non_negative_int("batch_idx", batch_idx)
        iter = non_negative_int("iter", iter)
        size = required("dataloader_len", dataloader_len)
        training = max_iters is not None or max_epochs is not None
        shown_epoch = progress_epoch(mode, epoch, training) if mode == "val" else None
        header = self._epoch_header(mode, size, shown_epoch)
        statistics = list(self._statistics)
        replaced = {_strip(stat.data_src, mode) for stat in statistics}
        for name in ("time", "data_time"):
            if name not in replaced:
                statistics.append(Statistic(name, name, "mean", "epoch", {}))
        scalars = self._mode_scalars(message_hub.log_scalars, mode)
        collected = self._collect(scalars, statistics, batch_idx, iter, message_hub,
                                  (mode, "epoch_end", iter, batch_idx))
        values = self._shown(collected, mode)
        non_scalars = self._non_scalars(message_hub.runtime_info, mode)
        return self._epoch_body(mode, header, values, non_scalars, with_non_scalar)

    # -- the lines, from collected values (both APIs) -----------------------------------

    def _header(
        self, mode: str, position: int, total: int, epoch: int | None = None,
        max_epochs: int | None = None,
    ) -> str:
        """``Epoch(train)  [2][ 5/20]  `` / ``Epoch(test) [5/5]  `` / ``Iter(val) [ 5/10]  ``.

        The position is right-aligned to the total, and the epoch to
        ``max_epochs`` when there is one (during training).
        """
        where = f"[{str(position).rjust(len(str(total)))}/{total}]"
        if not self.by_epoch or epoch is None:
            kind = "Epoch" if self.by_epoch else "Iter"
            return f"{kind}({mode}) {where}  "
        shown = f"[{epoch}]"
        if max_epochs is not None:
            shown = shown.rjust(len(str(max_epochs)) + 3)
        return f"Epoch({mode}){shown}{where}  "

    def _epoch_header(self, mode: str, size: int, epoch: int | None) -> str:
        """``Epoch(val) [1][10/10]  `` / ``Epoch(test) [5/5]  `` / ``Iter(val) [10/10]  ``."""
        if not self.by_epoch:
            return f"Iter({mode}) [{size}/{size}]  "
        shown = "" if epoch is None else f"[{epoch}]"
        return f"Epoch({mode}) {shown}[{size}/{size}]  "

    def _iter_body(
        self, mode: str, log_tag: dict[str, Any], tag: dict[str, Any], eta: Any,
        memory: int | None,
    ) -> str:
        """What follows the header of an iteration line; takes the shown values out of ``log_tag``.

        Learning rates (names of ``tag`` ending in ``lr``) come first, in e
        notation; then the eta with ``time`` and ``data_time``, when the eta
        is known (an iteration timer runs); then ``memory``; then the rest
        (for ``val`` only names starting with ``val/loss``, for ``test`` none).
        """
        digits = self.num_digits
        rates = []
        for key, value in list(tag.items()):
            if key.endswith("lr"):
                name = _strip(key, mode)
                log_tag.pop(name, None)
                rates.append(f"{name}: {value:.{digits}e}")
        line = " ".join(rates) + "  "
        if "time" in log_tag and "data_time" in log_tag and eta is not MISSING:
            line += (
                f"eta: {datetime.timedelta(seconds=int(eta))}  "
                f"time: {log_tag.pop('time'):.{digits}f}  "
                f"data_time: {log_tag.pop('data_time'):.{digits}f}  "
            )
        if memory is not None:
            line += f"memory: {memory}  "
            tag["memory"] = memory
        if mode == "train":
            line += "  ".join(f"{name}: {self._number(v)}" for name, v in log_tag.items())
        elif mode == "val":
            # As in MMEngine, a validation iteration only lists names that
            # themselves start with 'val/loss'; the epoch line has the values.
            line += "  ".join(
                f"{name}: {self._number(v)}"
                for name, v in log_tag.items()
                if name.startswith("val/loss")
            )
        return line

    def _epoch_body(
        self, mode: str, header: str, values: dict[str, Any], non_scalars: dict[str, Any],
        with_non_scalar: bool,
    ) -> tuple[OrderedDict[str, Any], str]:
        """``(tag, line)`` of an epoch: values, then non-scalars, then timing last."""
        timing_keys = ("time", "data_time", f"{mode}/time", f"{mode}/data_time")
        tag: OrderedDict[str, Any] = OrderedDict()
        timing: OrderedDict[str, Any] = OrderedDict()
        for name, value in values.items():
            (timing if name in timing_keys else tag)[name] = value
        shown = [*tag.items(), *non_scalars.items(), *timing.items()]
        line = header + "  " + "  ".join(f"{name}: {self._epoch_value(v)}" for name, v in shown)
        if with_non_scalar:
            tag.update(non_scalars)
        tag.update(timing)
        return tag, line

    @staticmethod
    def _mode_scalars(
        log_scalars: Mapping[str, HistoryBuffer], mode: str
    ) -> OrderedDict[str, HistoryBuffer]:
        """The buffers whose key starts with ``mode/``, keyed without that prefix."""
        prefix = f"{mode}/"
        return OrderedDict(
            (key[len(prefix):], buffer)
            for key, buffer in log_scalars.items()
            if key.startswith(prefix)
        )

    # -- helpers ----------------------------------------------------------------------

    def _collect(
        self,
        scalars: Mapping[str, HistoryBuffer],
        statistics: Sequence[Statistic],
        batch_idx: int,
        iter: int,
        message_hub: Any = None,
        step: tuple = (),
    ) -> OrderedDict[str, Any]:
        """Default statistic of every scalar, then the custom ones, by name."""
        values: OrderedDict[str, Any] = OrderedDict()
        for name, buffer in scalars.items():
            if self.mean_pattern.search(name) is not None:
                values[name] = buffer.mean(self.window_size)
            else:
                values[name] = buffer.current()
        shares = {}
        for stat in statistics:
            buffer = scalars.get(stat.data_src)
            if buffer is None:
                continue
            kwargs = self._statistic_kwargs(stat, batch_idx, iter)
            # Replacing an existing name keeps its place; a new one goes last.
            values[stat.log_name] = self._statistic(buffer, stat, kwargs, message_hub, step)
            if stat.reduce is not None:
                shares[stat.log_name] = (stat.reduce, share_of(values[stat.log_name], buffer,
                                                               kwargs.get(WINDOW)))
        values.update(self._job_values(message_hub, step, shares))
        return values

    @staticmethod
    def _statistic_kwargs(stat: Statistic, batch_idx: int, iter: int) -> dict[str, Any]:
        """The arguments of ``stat``'s method, with its window resolved."""
        kwargs = dict(stat.kwargs)
        if stat.window is not NO_WINDOW:
            if stat.window == "epoch":
                kwargs[WINDOW] = batch_idx + 1
            elif stat.window == "global":
                kwargs[WINDOW] = iter + 1
            else:
                kwargs[WINDOW] = stat.window
        return kwargs

    def _shown(self, values: Mapping[str, Any], mode: str) -> OrderedDict[str, Any]:
        if not self.log_with_hierarchy:
            return OrderedDict(values)
        return OrderedDict((f"{mode}/{name}", value) for name, value in values.items())

    def _non_scalars(self, runtime_info: Mapping[str, Any], mode: str) -> OrderedDict[str, Any]:
        prefix = f"{mode}/"
        found: OrderedDict[str, Any] = OrderedDict()
        for key, value in runtime_info.items():
            if key.startswith(prefix):
                found[key if self.log_with_hierarchy else key[len(prefix):]] = value
        return found

    def _number(self, value: Any) -> str:
        if isinstance(value, float):  # numpy.float64 included
            return f"{value:.{self.num_digits}f}"
        return f"{value}"

    def _epoch_value(self, value: Any) -> str:
        if isinstance(value, np.ndarray) or _is_tensor(value):
            return f"\n{value}\n"  # on lines of their own
        return self._number(value)


def _is_tensor(value: Any) -> bool:
    # A tensor can only exist if torch was imported by someone else.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


# -- formatting helpers -------------------------------------------------------------


def _strip(key: str, mode: str) -> str:
    prefix = f"{mode}/"
    return key.removeprefix(prefix)



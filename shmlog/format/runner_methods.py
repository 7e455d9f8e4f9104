"""LogProcessor's runner-facing methods, with MMEngine 0.10's names and signatures.

MMEngine's LoggerHook calls ``get_log_after_iter`` and ``get_log_after_epoch``
with the runner; those get every number they show through the methods below
(``_collect_scalars``, ``_get_epoch``, ...), one per question, as MMEngine's
do.  Subclasses of LogProcessor override them to change what is shown, and
MMEngine's own tests replace them on instances, so the public methods must
go through them and never around them.

A runner here is anything with MMEngine's attributes: ``message_hub``,
``iter``, ``epoch``, ``max_iters``, ``max_epochs``, the ``train_loop`` /
``val_loop`` / ``test_loop`` whose ``dataloader`` has a length, and
``_train_loop`` (a config dict or None before the training loop is built;
a runner without the attribute is taken to train when ``train_loop`` is set).
Those properties build the loops on a real Runner, so they are read only
when the line needs them.
"""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict
from typing import Any

from ..errors import InvalidType, InvalidValue
from .checks import MISSING, MODES, REDUCE, WINDOW, check_mode, is_int, parse_custom_cfg
from .reduce import share_of

_DEFAULT_EPOCH_STATISTICS = ("time", "data_time")


class RunnerMethods:
    """The part of :class:`shmlog.LogProcessor` that talks to a runner.

    It relies on LogProcessor's settings (``window_size``, ``by_epoch``,
    ``custom_cfg``, ``mean_pattern``, ``log_with_hierarchy``) and on its line
    builders (``_header``, ``_epoch_header``, ``_iter_body``, ``_epoch_body``,
    ``_mode_scalars``).
    """

    # -- the two calls LoggerHook makes ----------------------------------------------

    def get_log_after_iter(self, runner: Any, batch_idx: int, mode: str) -> tuple[dict, str]:
        """``(tag, log_str)`` after iteration ``batch_idx`` of the ``mode`` loop."""
        check_mode(mode, MODES, "get_log_after_iter")
        self._step = (mode, "iter", batch_idx)  # for reduce entries (with runner.iter)
        parsed = self._parse_windows_size(runner, batch_idx, self.custom_cfg)
        log_tag = self._collect_scalars(parsed, runner, mode)
        if not self.log_with_hierarchy:
            tag = copy.deepcopy(log_tag)
        elif getattr(self._collect_scalars, "__func__", None) is RunnerMethods._collect_scalars:
            # The same values under prefixed names: no second pass over the hub.
            tag = OrderedDict((f"{mode}/{name}", value) for name, value in log_tag.items())
        else:  # an override is asked, as MMEngine asks it
            tag = self._collect_scalars(parsed, runner, mode, True)
        training = _training(runner)
        if self.by_epoch:
            epoch = max_epochs = None
            if mode in ("train", "val"):
                epoch = self._get_epoch(runner, mode)
                max_epochs = runner.max_epochs if training else None
                tag["epoch"] = epoch
            header = self._header(mode, self._get_iter(runner, batch_idx),
                                  self._get_dataloader_size(runner, mode), epoch, max_epochs)
        elif mode == "train":
            header = self._header(mode, self._get_iter(runner, batch_idx), runner.max_iters)
        else:
            header = self._header(mode, batch_idx + 1, self._get_dataloader_size(runner, mode))
        tag["iter"] = runner.iter + 1 if training else 0
        memory = self._get_max_memory(runner) if _accelerator_available() else None
        eta = runner.message_hub.get_info("eta", MISSING)
        return tag, header + self._iter_body(mode, log_tag, tag, eta, memory)

    def get_log_after_epoch(
        self, runner: Any, batch_idx: int, mode: str, with_non_scalar: bool = False
    ) -> tuple[dict, str]:
        """``(tag, log_str)`` after a whole validation or test epoch.

        ``time`` and ``data_time`` are averaged over the epoch (``batch_idx + 1``
        updates) unless ``custom_cfg`` has an entry for them, and come last.
        Runtime info under the mode's prefix (non-scalar metrics) is shown in
        the line, and put in ``tag`` only with ``with_non_scalar``.
        """
        check_mode(mode, ("val", "test"), "get_log_after_epoch")
        self._step = (mode, "epoch_end", batch_idx)  # for reduce entries (with runner.iter)
        size = self._get_dataloader_size(runner, mode)
        epoch = self._get_epoch(runner, mode) if self.by_epoch and mode == "val" else None
        header = self._epoch_header(mode, size, epoch)
        cfg = self.custom_cfg
        replaced = {self._remove_prefix(entry["data_src"], f"{mode}/") for entry in cfg}
        cfg.extend(
            {"data_src": name, "window_size": "epoch", "method_name": "mean"}
            for name in _DEFAULT_EPOCH_STATISTICS if name not in replaced
        )
        parsed = self._parse_windows_size(runner, batch_idx, cfg)
        scalars = self._collect_scalars(parsed, runner, mode, self.log_with_hierarchy)
        non_scalars = self._collect_non_scalars(runner, mode)
        return self._epoch_body(mode, header, scalars, non_scalars, with_non_scalar)

    # -- one question each -------------------------------------------------------------

    def _collect_scalars(
        self, custom_cfg: list[dict[str, Any]], runner: Any, mode: str,
        reserve_prefix: bool = False,
    ) -> OrderedDict[str, Any]:
        """The statistic of every ``mode/`` scalar of ``runner.message_hub``, by name.

        ``custom_cfg`` entries have int (or absent) windows already
        (:meth:`_parse_windows_size`); each adds or replaces the value of its
        ``log_name``.  Names keep their ``mode/`` prefix with ``reserve_prefix``.
        """
        scalars = self._mode_scalars(runner.message_hub.log_scalars, mode)
        prefix = f"{mode}/" if reserve_prefix else ""
        tag: OrderedDict[str, Any] = OrderedDict()
        for name, buffer in scalars.items():
            if self.mean_pattern.search(name) is not None:
                tag[prefix + name] = buffer.mean(self.window_size)
            else:
                tag[prefix + name] = buffer.current()
        shares = {}
        for entry in copy.deepcopy(custom_cfg):
            data_src = entry.pop("data_src")
            log_name = entry.pop("log_name", data_src)
            reduce = entry.pop(REDUCE, None)  # shmlog's; the method never sees it
            if data_src in scalars:
                buffer = scalars[data_src]
                tag[prefix + log_name] = buffer.statistics(**entry)
                if reduce is not None:
                    shares[prefix + log_name] = (reduce, share_of(tag[prefix + log_name], buffer,
                                                                  entry.get(WINDOW)))
        if shares:  # runner.iter is read only when needed: it may build the train loop
            mode_, event, batch_idx = getattr(self, "_step", (mode, "iter", 0))
            step = (mode_, event, runner.iter, batch_idx)
            tag.update(self._job_values(runner.message_hub, step, shares))
        return tag

    def _collect_non_scalars(self, runner: Any, mode: str) -> OrderedDict[str, Any]:
        """Runtime info under the ``mode/`` prefix (the values themselves, not copies)."""
        found: OrderedDict[str, Any] = OrderedDict()
        prefix = f"{mode}/"
        for key, value in runner.message_hub.runtime_info.items():
            if key.startswith(prefix):
                found[key if self.log_with_hierarchy else key[len(prefix):]] = value
        return found

    def _parse_windows_size(
        self, runner: Any, batch_idx: int, custom_cfg: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """A copy of ``custom_cfg`` (default: this processor's) with int windows.

        ``'epoch'`` is ``batch_idx + 1`` updates, ``'global'`` is
        ``runner.iter + 1``; None, an absent window and ints stay as they are.
        """
        parsed = copy.deepcopy(self.custom_cfg if custom_cfg is None else custom_cfg)
        for index, entry in enumerate(parsed):
            window = entry.get(WINDOW)
            if window is None or is_int(window):
                continue
            if window == "epoch":
                entry[WINDOW] = batch_idx + 1
            elif window == "global":
                entry[WINDOW] = runner.iter + 1
            else:
                raise InvalidType(
                    f"custom_cfg[{index}]['window_size']: expected an int, 'epoch' or "
                    f"'global', got {type(window).__name__} {window!r}"
                )
        return parsed

    def _get_iter(self, runner: Any, batch_idx: int) -> int:
        """The iteration shown: in the epoch when ``by_epoch``, else in the whole run."""
        return batch_idx + 1 if self.by_epoch else runner.iter + 1

    def _get_epoch(self, runner: Any, mode: str) -> int:
        """The epoch shown: validation runs after the counter moved on, and is 0 without training."""
        if mode == "train":
            return runner.epoch + 1
        if mode == "val":
            return runner.epoch if _training(runner) else 0
        raise InvalidValue(f"_get_epoch mode: expected 'train' or 'val', got {mode!r}")

    def _get_cur_loop(self, runner: Any, mode: str) -> Any:
        """The runner's loop of ``mode`` (the test loop for anything but train and val)."""
        if mode == "train":
            return runner.train_loop
        if mode == "val":
            return runner.val_loop
        return runner.test_loop

    def _get_dataloader_size(self, runner: Any, mode: str) -> int:
        """Length of the dataloader of the ``mode`` loop of ``runner``."""
        loop = self._get_cur_loop(runner, mode)
        if loop is None:
            raise InvalidValue(f"the runner has no {mode}_loop; a {mode!r} line needs its length")
        return len(loop.dataloader)

    def _get_max_memory(self, runner: Any) -> int:
        """Peak CUDA memory of the runner's device in MiB since the last call (then reset)."""
        import torch  # only called when CUDA is available, so torch is there

        device = getattr(runner.model, "output_device", None)
        peak = torch.cuda.max_memory_allocated(device=device)
        torch.cuda.reset_peak_memory_stats()
        return int(peak) // (1 << 20)

    def _check_custom_cfg(self) -> None:
        """Check ``custom_cfg`` against ``by_epoch`` again (both may have changed)."""
        parse_custom_cfg(self.custom_cfg, self.by_epoch)

    @staticmethod
    def _remove_prefix(string: str, prefix: str) -> str:
        return string[len(prefix):] if string.startswith(prefix) else string


def _training(runner: Any) -> bool:
    """Whether the runner has a training loop (a config dict is one not built yet: no)."""
    loop = getattr(runner, "_train_loop", MISSING)
    if loop is MISSING:
        loop = getattr(runner, "train_loop", None)
    return loop is not None and not isinstance(loop, dict)


def _accelerator_available() -> bool:
    # Only a program that imported torch can have used CUDA.
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available())
    except (AttributeError, RuntimeError):
        return False

"""LogProcessor's runner-facing methods: every number of a line comes through an overridable one."""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from shmlog import HistoryBuffer, LogProcessor, MessageHub


def hub_with(name: str = "runner-methods") -> MessageHub:
    hub = MessageHub(name)
    for i in range(12):
        hub.update_scalar("train/loss", float(i))
        hub.update_scalar("train/time", 0.5)
        hub.update_scalar("train/data_time", 0.25)
        hub.update_scalar("val/acc", i / 10)
    hub.update_scalar("train/lr", 0.01)
    hub.update_info("eta", 61)
    hub.update_info("val/confusion", np.eye(2, dtype=int))
    return hub


class Loop:
    def __init__(self, length: int) -> None:
        self.dataloader = range(length)


class NoTrainingRunner:
    """A runner of a test-only run: its train loop is still a config dict."""

    def __init__(self, hub: MessageHub) -> None:
        self.message_hub = hub
        self._train_loop = {"type": "EpochBasedTrainLoop"}
        self.val_loop, self.test_loop = Loop(10), Loop(5)

    @property
    def train_loop(self) -> Any:
        raise AssertionError("reading train_loop would build the training loop")

    iter = epoch = max_iters = max_epochs = train_loop


def runner(hub: MessageHub | None = None, **fields: Any) -> SimpleNamespace:
    values = {"message_hub": hub or hub_with(), "iter": 11, "epoch": 1, "max_iters": 40,
              "max_epochs": 4, "_train_loop": object(), "train_loop": Loop(10),
              "val_loop": Loop(10), "test_loop": Loop(5), "model": SimpleNamespace()}
    values.update(fields)
    return SimpleNamespace(**values)


class Doubled(LogProcessor):
    """A user's processor that shows every collected scalar doubled."""

    def _collect_scalars(self, custom_cfg, runner, mode, reserve_prefix=False):
        tag = super()._collect_scalars(custom_cfg, runner, mode, reserve_prefix)
        return OrderedDict((k, v * 2) for k, v in tag.items())


def test_an_override_of_collect_scalars_changes_iteration_and_epoch_lines() -> None:
    r = runner()
    _, plain = LogProcessor().get_log_after_iter(r, 1, "train")
    tag, doubled = Doubled(log_with_hierarchy=True).get_log_after_iter(r, 1, "train")
    assert "time: 0.5000  data_time: 0.2500  loss: 6.5000" in plain
    assert "time: 1.0000  data_time: 0.5000  loss: 13.0000" in doubled
    assert tag["train/loss"] == 13.0  # asked again for the prefixed names
    _, line = Doubled().get_log_after_epoch(r, 9, "val")
    assert line.startswith("Epoch(val) [1][10/10]    acc: 2.2000")


def test_instance_replacements_are_what_the_lines_show() -> None:
    lp = LogProcessor()
    lp._collect_scalars = lambda *args, **kwargs: OrderedDict(time=2.0, data_time=1.0, f1=0.5)
    lp._collect_non_scalars = lambda runner, mode: OrderedDict(note="ok")
    _, line = lp.get_log_after_iter(runner(), 3, "train")
    assert line == "Epoch(train) [2][ 4/10]    eta: 0:01:01  time: 2.0000  data_time: 1.0000  f1: 0.5000"
    _, line = lp.get_log_after_epoch(runner(), 4, "test")
    assert line == "Epoch(test) [5/5]    f1: 0.5000  note: ok  time: 2.0000  data_time: 1.0000"


def test_a_run_without_training_never_builds_the_train_loop() -> None:
    lp = LogProcessor()
    hub = hub_with("no-training")
    tag, line = lp.get_log_after_iter(NoTrainingRunner(hub), 4, "val")
    assert line.startswith("Epoch(val)[0][ 5/10]") and tag["iter"] == 0  # as MMEngine: no pad
    _, line = lp.get_log_after_epoch(NoTrainingRunner(hub), 10, "val")
    assert line.startswith("Epoch(val) [0][10/10]    acc: 1.1000  confusion: \n[[1 0]")
    assert lp._get_epoch(NoTrainingRunner(hub), "val") == 0


def test_epoch_iteration_and_loop_questions() -> None:
    lp, r = LogProcessor(), runner()
    assert lp._get_epoch(r, "train") == 2 and lp._get_epoch(r, "val") == 1
    with pytest.raises(ValueError, match="_get_epoch mode: expected 'train' or 'val', got 'test'"):
        lp._get_epoch(r, "test")
    assert lp._get_iter(r, 3) == 4
    lp.by_epoch = False  # read at call time
    assert lp._get_iter(r, 3) == 12
    assert [lp._get_dataloader_size(r, m) for m in ("train", "val", "test")] == [10, 10, 5]
    assert lp._get_cur_loop(r, "anything else") is r.test_loop


def test_window_parsing() -> None:
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "mean", "window_size": "global"}])
    assert lp._parse_windows_size(runner(iter=7), 2) == [
        {"data_src": "loss", "method_name": "mean", "window_size": 8}]
    parsed = lp._parse_windows_size(runner(), 2, [{"data_src": "a", "window_size": "epoch"},
                                                  {"data_src": "b", "window_size": 5},
                                                  {"data_src": "c"}])
    assert [e.get("window_size") for e in parsed] == [3, 5, None]
    assert lp.custom_cfg[0]["window_size"] == "global"  # a copy was parsed
    with pytest.raises(TypeError, match=r"custom_cfg\[0\]\['window_size'\]: .* got list \[\]"):
        lp._parse_windows_size(runner(), 2, [{"data_src": "a", "window_size": []}])


def test_collected_scalars_keep_or_drop_their_prefix() -> None:
    r = runner()
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "max", "log_name": "loss_max"}])
    flat = lp._collect_scalars(lp.custom_cfg, r, "train")
    assert list(flat) == ["loss", "time", "data_time", "lr", "loss_max"]
    assert flat["loss"] == np.mean(np.arange(2, 12)) and flat["loss_max"] == 11.0
    prefixed = lp._collect_scalars(lp.custom_cfg, r, "train", reserve_prefix=True)
    assert list(prefixed) == [f"train/{name}" for name in flat]
    info = lp._collect_non_scalars(r, "val")
    assert list(info) == ["confusion"] and info["confusion"] is r.message_hub.get_info("val/confusion")


def test_custom_cfg_is_checked_whenever_it_or_by_epoch_changes() -> None:
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "mean", "window_size": "epoch"}])
    lp.by_epoch = False
    with pytest.raises(AssertionError, match="'epoch' needs by_epoch=True"):
        lp._check_custom_cfg()
    with pytest.raises(ValueError, match="needs a 'data_src' key"):
        lp.custom_cfg = [{"method_name": "mean"}]
    lp.custom_cfg = None
    assert lp.custom_cfg == []


def test_memory_is_read_when_cuda_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        max_memory_allocated=lambda device=None: calls.append(device) or 300 * 2**20,
        reset_peak_memory_stats=lambda: calls.append("reset"),
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    r = runner(model=SimpleNamespace(output_device="cuda:1"))
    tag, line = LogProcessor().get_log_after_iter(r, 1, "train")
    assert "data_time: 0.2500  memory: 300  loss" in line and tag["memory"] == 300
    assert calls == ["cuda:1", "reset"]


def test_a_history_buffer_of_another_kind_of_hub_is_read_the_same() -> None:
    """The runner's hub is read through ``log_scalars`` and ``get_info`` only."""
    scalars = OrderedDict([("train/loss", HistoryBuffer([1.0, 3.0], [1, 1])),
                           ("train/time", HistoryBuffer([1.0], [1])),
                           ("train/data_time", HistoryBuffer([0.5], [1]))])
    hub = SimpleNamespace(log_scalars=scalars, runtime_info={"eta": 5},
                          get_info=lambda key, default=None: {"eta": 5}.get(key, default))
    _, line = LogProcessor().get_log_after_iter(runner(hub), 0, "train")
    assert line == ("Epoch(train) [2][ 1/10]    eta: 0:00:05  time: 1.0000  data_time: 0.5000  "
                    "loss: 2.0000")

"""LogProcessor: MMEngine 0.10.7's exact lines and tags, validation, windows."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from shmlog import HistoryBuffer, LogProcessor, MessageHub

GOLDEN_NAME = "mmengine-0.10.7-formats.txt"


# -- the golden file -----------------------------------------------------------------


def _golden_path() -> Path | None:
    here = Path(__file__).resolve().parent
    candidates = []
    if os.environ.get("SHMLOG_GOLDEN_DIR"):
        candidates.append(Path(os.environ["SHMLOG_GOLDEN_DIR"]) / GOLDEN_NAME)
    candidates.append(here / "golden" / GOLDEN_NAME)
    candidates.append(here.parents[1] / "shared" / "golden" / GOLDEN_NAME)
    return next((path for path in candidates if path.is_file()), None)


_CASE = re.compile(
    r"^(after_iter|after_epoch) by_epoch=(True|False) hierarchy=(True|False) "
    r"mode=(train|val|test) batch_idx=(\d+)$"
)
_SECTION = re.compile(r"^## LogProcessor \(custom_cfg=(.*)\)$")


def _parse_golden(path: Path | None) -> tuple[Any, list[dict[str, Any]]]:
    """The custom_cfg of the LogProcessor section and its cases, in file order."""
    if path is None:
        return None, []
    custom_cfg = None
    cases: list[dict[str, Any]] = []
    in_section = False
    for raw in path.read_text().splitlines():
        if raw.startswith("## "):
            section = _SECTION.match(raw)
            in_section = section is not None
            if section:
                custom_cfg = eval(section.group(1), {"__builtins__": {}}, {"dict": dict})
            continue
        if not in_section:
            continue
        header = _CASE.match(raw)
        if header:
            kind, by_epoch, hierarchy, mode, batch_idx = header.groups()
            cases.append(
                {"kind": kind, "by_epoch": by_epoch == "True", "hierarchy": hierarchy == "True",
                     "mode": mode, "batch_idx": int(batch_idx), "line": None, "tag": None}
            )
        elif raw.startswith("  line: "):
            cases[-1]["line"] = eval(raw[len("  line: "):], {"__builtins__": {}})
        elif raw.startswith("  tag:  "):
            cases[-1]["tag"] = eval(raw[len("  tag:  "):], {"__builtins__": {}}, {"np": np})
    return custom_cfg, cases


GOLDEN_CUSTOM_CFG, GOLDEN_CASES = _parse_golden(_golden_path())


def _case_id(case: dict[str, Any]) -> str:
    return (f"{case['kind']}-{'epoch' if case['by_epoch'] else 'iter'}-"
            f"{'hier' if case['hierarchy'] else 'flat'}-{case['mode']}")


# -- the golden setup ------------------------------------------------------------------

_hub_names = itertools.count()


def golden_hub(eta: int | None = 4000) -> MessageHub:
    """12 updates per key, as the golden file's header describes."""
    hub = MessageHub(f"log-processor-test-{next(_hub_names)}")
    for i in range(12):
        hub.update_scalar("train/lr", 0.1 / (i + 1))
        hub.update_scalar("train/loss", 1 / (i + 1))
        hub.update_scalar("train/loss_cls", 0.5 / (i + 1))
        hub.update_scalar("train/time", 0.2 + 0.01 * i)
        hub.update_scalar("train/data_time", 0.05 + 0.001 * i)
        hub.update_scalar("val/loss", 0.3 + 0.01 * i)
        hub.update_scalar("val/time", 0.1)
        hub.update_scalar("val/data_time", 0.01)
        # The golden tags show val/accuracy after data_time with latest value 0.91.
        hub.update_scalar("val/accuracy", 0.8 + 0.01 * i)
        hub.update_scalar("test/time", 0.1)
        hub.update_scalar("test/data_time", 0.01)
    if eta is not None:
        hub.update_info("eta", eta)
    return hub


def _loop(length: int) -> SimpleNamespace:
    return SimpleNamespace(dataloader=range(length))


def golden_runner(hub: MessageHub | None = None, **overrides: Any) -> SimpleNamespace:
    fields = {
        "message_hub": hub if hub is not None else golden_hub(),
        "iter": 10, "epoch": 1, "max_iters": 50, "max_epochs": 10,
        "train_loop": _loop(20), "val_loop": _loop(10), "test_loop": _loop(5),
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


GOLDEN_CFG = [
    {"data_src": "loss", "method_name": "max", "log_name": "loss_max", "window_size": "global"}
]


def processor(**kwargs: Any) -> LogProcessor:
    kwargs.setdefault("custom_cfg", GOLDEN_CFG)
    return LogProcessor(**kwargs)


# -- golden comparisons ------------------------------------------------------------------


def test_golden_file_is_found_and_complete():
    assert _golden_path() is not None, (
        f"{GOLDEN_NAME} not found: put it in tests/golden/ or point SHMLOG_GOLDEN_DIR at it"
    )
    assert GOLDEN_CUSTOM_CFG == GOLDEN_CFG
    assert len(GOLDEN_CASES) == 20
    assert all(case["line"] is not None for case in GOLDEN_CASES)
    assert sum(case["tag"] is not None for case in GOLDEN_CASES) == 12


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=_case_id)
def test_golden_line_and_tag(case):
    lp = LogProcessor(by_epoch=case["by_epoch"], log_with_hierarchy=case["hierarchy"],
                      custom_cfg=GOLDEN_CUSTOM_CFG)
    runner = golden_runner()
    if case["kind"] == "after_iter":
        tag, line = lp.get_log_after_iter(runner, case["batch_idx"], case["mode"])
    else:
        tag, line = lp.get_log_after_epoch(runner, case["batch_idx"], case["mode"])
    assert line == case["line"]
    expected = case["tag"]
    if expected is None:
        return
    assert list(tag) == list(expected)
    for key, want in expected.items():
        got = tag[key]
        if isinstance(want, np.float64):
            # The golden file shows values rounded to 6 decimals.
            assert type(got) is np.float64, key
            assert got == pytest.approx(float(want), abs=5.01e-7), key
        else:
            assert type(got) is type(want) and got == want, key


def test_after_epoch_tag_puts_timing_last_and_keeps_float64():
    tag, _ = processor().get_log_after_epoch(golden_runner(), 9, "val")
    assert list(tag) == ["loss", "accuracy", "loss_max", "time", "data_time"]
    assert all(type(v) is np.float64 for v in tag.values())
    assert tag["loss"] == pytest.approx(0.365)
    assert tag["accuracy"] == pytest.approx(0.91)


# -- runner-free API ---------------------------------------------------------------------


@pytest.mark.parametrize("by_epoch", [True, False])
@pytest.mark.parametrize("hierarchy", [True, False])
@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_format_iter_equals_runner_api(by_epoch, hierarchy, mode):
    hub = golden_hub()
    hub.update_info(f"{mode}/note", "ok")
    lp = processor(by_epoch=by_epoch, log_with_hierarchy=hierarchy)
    runner = golden_runner(hub)
    lengths = {"train": 20, "val": 10, "test": 5}
    expected = lp.get_log_after_iter(runner, 4, mode)
    got = lp.format_iter(hub, mode, 4, iter=10, epoch=1, max_iters=50, max_epochs=10,
                         dataloader_len=lengths[mode])
    assert got == expected
    if mode != "train":
        epoch_expected = lp.get_log_after_epoch(runner, 9, mode, with_non_scalar=True)
        epoch_got = lp.format_epoch(hub, mode, 9, iter=10, epoch=1, max_iters=50,
                                    max_epochs=10, dataloader_len=lengths[mode],
                                    with_non_scalar=True)
        assert epoch_got == epoch_expected


def test_format_iter_needs_the_numbers_its_line_shows():
    hub = golden_hub()
    with pytest.raises(ValueError, match="dataloader_len"):
        LogProcessor().format_iter(hub, "train", 4, iter=10, epoch=1, max_epochs=10)
    with pytest.raises(ValueError, match="max_iters"):
        LogProcessor(by_epoch=False).format_iter(hub, "train", 4, iter=10, dataloader_len=20)
    with pytest.raises(TypeError, match="batch_idx"):
        LogProcessor().format_iter(hub, "val", 4.0, dataloader_len=10)
    with pytest.raises(ValueError, match="iter"):
        LogProcessor().format_iter(hub, "val", 4, iter=-1, dataloader_len=10)


def test_iter_train_line_does_not_need_the_train_dataloader_length():
    runner = golden_runner(train_loop=SimpleNamespace(dataloader=object()))
    _, line = processor(by_epoch=False).get_log_after_iter(runner, 4, "train")
    assert line.startswith("Iter(train) [11/50]  lr: 8.3333e-03  ")


def test_without_training_loop_val_is_epoch_zero_and_iter_zero():
    runner = golden_runner(train_loop=None, iter=0, epoch=0, max_iters=0, max_epochs=0)
    lp = processor()
    tag, line = lp.get_log_after_iter(runner, 4, "val")
    assert line.startswith("Epoch(val)[0][ 5/10]    eta: 1:06:40  ")
    assert tag["epoch"] == 0 and tag["iter"] == 0
    _, line = lp.get_log_after_epoch(runner, 9, "val")
    assert line.startswith("Epoch(val) [0][10/10]    loss: 0.3650")
    # The runner-free form: no max_iters/max_epochs means no training loop.
    assert lp.format_iter(runner.message_hub, "val", 4, dataloader_len=10) == \
        lp.get_log_after_iter(runner, 4, "val")
    tag, line = lp.format_iter(runner.message_hub, "val", 4, epoch=3, dataloader_len=10)
    assert line.startswith("Epoch(val)[0][ 5/10]") and tag["epoch"] == 0


# -- line layout ---------------------------------------------------------------------------


def test_epoch_and_iteration_are_right_aligned_to_their_maxima():
    lp = processor()
    _, line = lp.get_log_after_iter(golden_runner(epoch=8, max_epochs=100), 4, "train")
    assert line.startswith("Epoch(train)   [9][ 5/20]  lr: ")
    _, line = processor(by_epoch=False).get_log_after_iter(
        golden_runner(max_iters=1000), 4, "train")
    assert line.startswith("Iter(train) [  11/1000]  lr: ")


def test_without_eta_time_is_listed_with_the_other_values():
    runner = golden_runner(golden_hub(eta=None))
    _, line = processor().get_log_after_iter(runner, 4, "train")
    assert line == ("Epoch(train)  [2][ 5/20]  lr: 8.3333e-03  loss: 0.1603  loss_cls: 0.0802  "
                    "time: 0.2650  data_time: 0.0565  loss_max: 0.5000")


def test_eta_is_whole_seconds():
    hub = golden_hub(eta=90061.9)
    _, line = processor().get_log_after_iter(golden_runner(hub), 4, "train")
    assert "  eta: 1 day, 1:01:01  time: 0.2650  " in line


def test_every_key_ending_in_lr_is_shown_in_e_notation():
    hub = golden_hub()
    hub.update_scalar("train/backbone_lr", 0.001)
    tag, line = processor().get_log_after_iter(golden_runner(hub), 4, "train")
    assert "  lr: 8.3333e-03 backbone_lr: 1.0000e-03  eta: " in line
    assert line.count("backbone_lr") == 1
    assert tag["backbone_lr"] == pytest.approx(0.001)


def test_num_digits():
    _, line = processor(num_digits=2).get_log_after_iter(golden_runner(), 4, "train")
    assert line == ("Epoch(train)  [2][ 5/20]  lr: 8.33e-03  eta: 1:06:40  time: 0.27  "
                    "data_time: 0.06  loss: 0.16  loss_cls: 0.08  loss_max: 0.50")


def test_memory_is_shown_when_given():
    tag, line = processor().format_iter(golden_hub(), "train", 4, iter=10, epoch=1,
                                        max_epochs=10, max_iters=50, dataloader_len=20,
                                        memory=1234)
    assert "  data_time: 0.0565  memory: 1234  loss: 0.1603" in line
    assert list(tag)[-3:] == ["epoch", "iter", "memory"] and tag["memory"] == 1234
    tag, line = processor().get_log_after_iter(golden_runner(), 4, "train")
    assert "memory" not in line and "memory" not in tag


def test_mean_pattern_chooses_mean_or_latest():
    tag, _ = processor(mean_pattern=r"acc").get_log_after_iter(golden_runner(), 4, "val")
    assert tag["accuracy"] == pytest.approx(0.865)  # mean of the last 10
    assert tag["loss"] == pytest.approx(0.41)  # now the latest value


def test_only_keys_under_the_mode_prefix_are_collected():
    hub = golden_hub()
    hub.update_scalar("train_extra", 5.0)
    hub.update_scalar("trainer/x", 5.0)
    hub.update_scalar("validation/y", 5.0)
    tag, _ = processor().get_log_after_iter(golden_runner(hub), 4, "train")
    assert list(tag) == [
        "lr", "loss", "loss_cls", "time", "data_time", "loss_max", "epoch", "iter"
    ]
    tag, _ = processor().get_log_after_epoch(golden_runner(hub), 9, "val")
    assert "y" not in tag and "validation/y" not in tag


# -- custom_cfg ---------------------------------------------------------------------------

_ALL_LOSSES = [1 / (i + 1) for i in range(12)]


def test_custom_cfg_without_log_name_replaces_in_place():
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "mean", "window_size": 100}])
    tag, line = lp.get_log_after_iter(golden_runner(), 4, "train")
    assert list(tag) == ["lr", "loss", "loss_cls", "time", "data_time", "epoch", "iter"]
    assert tag["loss"] == pytest.approx(np.mean(_ALL_LOSSES))
    assert f"  loss: {np.mean(_ALL_LOSSES):.4f}  loss_cls: 0.0802" in line


def test_custom_cfg_with_new_log_name_adds_after_the_defaults():
    lp = LogProcessor(custom_cfg=[
        {"data_src": "loss", "method_name": "min", "log_name": "loss_min", "window_size": 3}
    ])
    tag, line = lp.get_log_after_iter(golden_runner(), 4, "train")
    assert list(tag)[:6] == ["lr", "loss", "loss_cls", "time", "data_time", "loss_min"]
    assert tag["loss"] == pytest.approx(np.mean(_ALL_LOSSES[-10:]))
    assert tag["loss_min"] == pytest.approx(1 / 12)
    assert line.endswith("loss: 0.1603  loss_cls: 0.0802  loss_min: 0.0833")


def test_window_epoch_is_the_batches_of_this_epoch():
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "mean", "log_name": "e",
                                       "window_size": "epoch"}])
    tag, _ = lp.get_log_after_iter(golden_runner(), 2, "train")
    assert tag["e"] == pytest.approx(np.mean(_ALL_LOSSES[-3:]))
    tag, _ = lp.get_log_after_iter(golden_runner(), 5, "train")
    assert tag["e"] == pytest.approx(np.mean(_ALL_LOSSES[-6:]))


def test_window_global_is_the_last_iter_plus_one_updates():
    lp = processor()
    tag, _ = lp.get_log_after_iter(golden_runner(iter=10), 4, "train")
    assert tag["loss_max"] == 0.5  # 11 of the 12 updates
    tag, _ = lp.get_log_after_iter(golden_runner(iter=11), 4, "train")
    assert tag["loss_max"] == 1.0


def test_window_global_uses_running_totals_beyond_the_retained_records():
    buffer = HistoryBuffer(max_length=4)
    for value in _ALL_LOSSES:
        buffer.update(value)
    hub = MessageHub(f"log-processor-test-{next(_hub_names)}", log_scalars={"train/loss": buffer})
    lp = LogProcessor(window_size=3, custom_cfg=[
        {"data_src": "loss", "method_name": "max", "log_name": "loss_max",
         "window_size": "global"},
        {"data_src": "loss", "method_name": "mean", "log_name": "loss_mean",
         "window_size": "global"},
    ])
    tag, _ = lp.format_iter(hub, "train", 0, iter=11, epoch=0, max_epochs=1, dataloader_len=12)
    assert tag["loss_max"] == 1.0  # dropped from the ring long ago
    assert tag["loss_mean"] == pytest.approx(np.mean(_ALL_LOSSES))


def test_custom_cfg_window_none_and_absent_mean_the_whole_history():
    lp = LogProcessor(custom_cfg=[
        {"data_src": "loss", "method_name": "mean", "log_name": "a", "window_size": None},
        {"data_src": "loss", "method_name": "max", "log_name": "b"},
        {"data_src": "lr", "method_name": "current", "log_name": "c"},
    ])
    tag, _ = lp.get_log_after_iter(golden_runner(), 4, "train")
    assert tag["a"] == pytest.approx(np.mean(_ALL_LOSSES))
    assert tag["b"] == 1.0
    assert tag["c"] == pytest.approx(0.1 / 12)


def _scaled_mean(self, window_size=None, factor=1.0):
    return self.mean(window_size) * factor


try:
    HistoryBuffer.register_statistics(_scaled_mean)
except ValueError:  # the module was imported twice in one process
    pass


def test_custom_cfg_passes_other_keys_to_the_method():
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "_scaled_mean",
                                       "log_name": "loss_x2", "window_size": 3, "factor": 2.0}])
    tag, _ = lp.get_log_after_iter(golden_runner(), 4, "train")
    assert tag["loss_x2"] == pytest.approx(2 * np.mean(_ALL_LOSSES[-3:]))


def test_custom_cfg_unknown_method_fails_when_used():
    lp = LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "median", "log_name": "m"}])
    with pytest.raises(KeyError, match="median"):
        lp.get_log_after_iter(golden_runner(), 4, "train")


def test_custom_cfg_for_a_source_missing_in_the_mode_is_skipped():
    lp = LogProcessor(
        custom_cfg=[{"data_src": "accuracy", "method_name": "max", "log_name": "best"}]
    )
    tag, _ = lp.get_log_after_iter(golden_runner(), 4, "train")
    assert "best" not in tag
    tag, _ = lp.get_log_after_epoch(golden_runner(), 9, "val")
    assert tag["best"] == pytest.approx(0.91)


def test_after_epoch_time_follows_custom_cfg_when_it_has_one():
    hub = golden_hub()
    for i in range(4):
        hub.update_scalar("val/time", 0.5 + i)  # 16 updates: 12 x 0.1, then 0.5 .. 3.5
    lp = LogProcessor()
    tag, line = lp.get_log_after_epoch(golden_runner(hub), 3, "val")
    assert tag["time"] == pytest.approx(np.mean([0.5, 1.5, 2.5, 3.5]))  # the epoch's 4
    assert line.endswith("time: 2.0000  data_time: 0.0100")
    lp = LogProcessor(custom_cfg=[{"data_src": "time", "method_name": "max"}])
    tag, line = lp.get_log_after_epoch(golden_runner(hub), 3, "val")
    assert tag["time"] == 3.5
    assert list(tag)[-2:] == ["time", "data_time"]
    assert line.endswith("time: 3.5000  data_time: 0.0100")


def test_seed_configs_build():
    configs = [
        {"window_size": 10, "by_epoch": True, "custom_cfg": [
            {"data_src": "loss", "method_name": "mean", "log_name": "loss_large_window",
                 "window_size": 100}]},
        {"window_size": 10, "by_epoch": True, "custom_cfg": [
            {"data_src": "loss", "method_name": "mean", "window_size": 100}]},
        {"window_size": 10, "by_epoch": True, "custom_cfg": [
            {"data_src": "loss", "log_name": "loss_large_window", "method_name": "mean",
                 "window_size": 100},
            {"data_src": "loss", "method_name": "mean", "window_size": 100}]},
        {"window_size": 10, "by_epoch": False, "custom_cfg": [
            {"data_src": "loss", "method_name": "min", "log_name": "loss_min",
             "window_size": "global"}]},
    ]
    for cfg in configs:
        lp = LogProcessor(**cfg)
        assert lp.window_size == 10 and lp.by_epoch is cfg["by_epoch"]
        assert lp.custom_cfg == cfg["custom_cfg"]
        tag, _ = lp.get_log_after_iter(golden_runner(), 4, "train")
        for entry in cfg["custom_cfg"]:
            assert entry.get("log_name", entry["data_src"]) in tag


def test_custom_cfg_is_copied():
    cfg = [{"data_src": "loss", "method_name": "max", "log_name": "loss_max"}]
    lp = LogProcessor(custom_cfg=cfg)
    cfg[0]["window_size"] = "epoch"
    cfg.append({"data_src": "loss", "method_name": "min"})
    returned = lp.custom_cfg
    returned[0]["log_name"] = "other"
    assert lp.custom_cfg == [{"data_src": "loss", "method_name": "max", "log_name": "loss_max"}]


# -- validation ---------------------------------------------------------------------------

_ENTRY = {"data_src": "loss", "method_name": "mean"}


@pytest.mark.parametrize(
    "kwargs, error, fragments",
    [
        ({"window_size": 0}, ValueError, ["window_size", "0", "int >= 1"]),
        ({"window_size": "10"}, TypeError, ["window_size", "'10'", "int >= 1"]),
        ({"window_size": True}, TypeError, ["window_size", "True", "int >= 1"]),
        ({"by_epoch": "yes"}, TypeError, ["by_epoch", "'yes'", "bool"]),
        ({"num_digits": -1}, ValueError, ["num_digits", "-1", "int >= 0"]),
        ({"num_digits": 2.5}, TypeError, ["num_digits", "2.5", "int >= 0"]),
        ({"log_with_hierarchy": None}, TypeError, ["log_with_hierarchy", "None", "bool"]),
        ({"mean_pattern": "(loss"}, ValueError, ["mean_pattern", "'(loss'", "regular expression"]),
        ({"mean_pattern": 3}, TypeError, ["mean_pattern", "3", "regular expression"]),
        ({"custom_cfg": _ENTRY}, TypeError, ["custom_cfg", "data_src", "list of dicts"]),
        ({"custom_cfg": "loss"}, TypeError, ["custom_cfg", "'loss'", "list of dicts"]),
        ({"custom_cfg": [("loss", "mean")]}, TypeError, ["custom_cfg[0]", "('loss', 'mean')",
                                                          "a dict"]),
        ({"custom_cfg": [{"method_name": "mean"}]}, ValueError,
         ["custom_cfg[0]", "'data_src'", "method_name"]),
        ({"custom_cfg": [_ENTRY, {"data_src": "time", "log_name": "t"}]}, ValueError,
         ["custom_cfg[1]", "'method_name'", "'time'"]),
        ({"custom_cfg": [{"data_src": 1, "method_name": "mean"}]}, TypeError,
         ["custom_cfg[0]['data_src']", "1", "non-empty str"]),
        ({"custom_cfg": [{"data_src": "loss", "method_name": max}]}, TypeError,
         ["custom_cfg[0]['method_name']", "max", "non-empty str"]),
        ({"custom_cfg": [dict(_ENTRY, log_name="")]}, TypeError,
         ["custom_cfg[0]['log_name']", "''", "non-empty str"]),
        ({"by_epoch": False, "custom_cfg": [dict(_ENTRY, window_size="epoch")]}, ValueError,
         ["custom_cfg[0]['window_size']", "'epoch'", "by_epoch=True"]),
        ({"custom_cfg": [dict(_ENTRY, window_size="all")]}, ValueError,
         ["custom_cfg[0]['window_size']", "'all'", "'epoch' or 'global'"]),
        ({"custom_cfg": [dict(_ENTRY, window_size=0)]}, ValueError,
         ["custom_cfg[0]['window_size']", "0", "int >= 1"]),
        ({"custom_cfg": [dict(_ENTRY, window_size=2.0)]}, TypeError,
         ["custom_cfg[0]['window_size']", "2.0", "int >= 1"]),
        ({"custom_cfg": [dict(_ENTRY, window_size=True)]}, TypeError,
         ["custom_cfg[0]['window_size']", "True", "int >= 1"]),
        # The same source replaced twice.
        ({"custom_cfg": [dict(_ENTRY, window_size=100),
                         {"data_src": "loss", "method_name": "max"}]},
         ValueError, ["custom_cfg[1]", "'loss'", "custom_cfg[0]", "distinct log_name"]),
        # The same log_name twice.
        ({"custom_cfg": [dict(_ENTRY, log_name="x"), {"data_src": "time", "method_name": "max",
                                                             "log_name": "x"}]},
         ValueError, ["custom_cfg[1]", "'x'", "'time'", "custom_cfg[0]"]),
        # A new name that another entry already uses as its replaced source.
        ({"custom_cfg": [{"data_src": "loss_cls", "method_name": "max"},
                          dict(_ENTRY, log_name="loss_cls")]},
         ValueError, ["custom_cfg[1]", "'loss_cls'", "'loss'"]),
    ],
)
def test_invalid_arguments_name_key_value_and_expectation(kwargs, error, fragments):
    with pytest.raises(error) as info:
        LogProcessor(**kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_valid_windows_are_accepted():
    LogProcessor(by_epoch=False, custom_cfg=[dict(_ENTRY, window_size="global")])
    LogProcessor(custom_cfg=[dict(_ENTRY, log_name="a", window_size="epoch"),
                             dict(_ENTRY, log_name="b", window_size=np.int64(5)),
                             dict(_ENTRY, log_name="c", window_size=None)])


def test_invalid_modes():
    lp = processor()
    runner = golden_runner()
    with pytest.raises(ValueError, match=r"\['train', 'val', 'test'\], got 'eval'"):
        lp.get_log_after_iter(runner, 4, "eval")
    with pytest.raises(ValueError, match=r"\['val', 'test'\], got 'train'"):
        lp.get_log_after_epoch(runner, 9, "train")
    with pytest.raises(ValueError, match="got 'train'"):
        lp.format_epoch(runner.message_hub, "train", 9, dataloader_len=20)


# -- non-scalar info ------------------------------------------------------------------------


def _hub_with_non_scalars() -> MessageHub:
    hub = golden_hub()
    hub.update_info("val/confusion", np.array([[1, 2], [3, 4]]))
    hub.update_info("val/note", "ok")
    hub.update_info("validation", "not a val/ key")
    hub.update_info("test/other", 1)
    return hub


@pytest.mark.parametrize("hierarchy", [False, True])
def test_with_non_scalar(hierarchy):
    runner = golden_runner(_hub_with_non_scalars())
    lp = processor(log_with_hierarchy=hierarchy)
    p = "val/" if hierarchy else ""
    tag, line = lp.get_log_after_epoch(runner, 9, "val")
    assert line == (
        f"Epoch(val) [1][10/10]    {p}loss: 0.3650  {p}accuracy: 0.9100  {p}loss_max: 0.4100  "
        f"{p}confusion: \n[[1 2]\n [3 4]]\n  {p}note: ok  {p}time: 0.1000  {p}data_time: 0.0100"
    )
    assert list(tag) == [f"{p}{k}" for k in ("loss", "accuracy", "loss_max", "time", "data_time")]
    tag, line2 = lp.get_log_after_epoch(runner, 9, "val", with_non_scalar=True)
    assert line2 == line
    names = ("loss", "accuracy", "loss_max", "confusion", "note", "time", "data_time")
    assert list(tag) == [f"{p}{k}" for k in names]
    np.testing.assert_array_equal(tag[f"{p}confusion"], [[1, 2], [3, 4]])
    assert tag[f"{p}note"] == "ok"


def test_tensors_are_shown_on_their_own_lines(monkeypatch):
    class Tensor:
        def __str__(self) -> str:
            return "tensor([1, 2])"

    fake_torch = types.ModuleType("torch")
    fake_torch.Tensor = Tensor
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    hub = golden_hub()
    hub.update_info("test/embedding", Tensor())
    _, line = processor().get_log_after_epoch(golden_runner(hub), 4, "test")
    assert line == (
        "Epoch(test) [5/5]    embedding: \ntensor([1, 2])\n  time: 0.1000  data_time: 0.0100"
    )


# -- cost and purity -----------------------------------------------------------------------


class _CountingHub:
    """A MessageHub stand-in that counts how it is read."""

    def __init__(self, hub: MessageHub) -> None:
        self._hub = hub
        self.scalar_reads = 0
        self.info_reads = 0

    @property
    def log_scalars(self):
        self.scalar_reads += 1
        return self._hub.log_scalars

    @property
    def runtime_info(self):
        self.info_reads += 1
        return self._hub.runtime_info

    def get_info(self, key, default=None):
        return self._hub.get_info(key, default)

    def get_scalar(self, key):
        raise AssertionError("get_scalar must not be used: log_scalars is read once")


@pytest.mark.parametrize("hierarchy", [False, True])
def test_log_scalars_is_read_once_per_call(hierarchy):
    counting = _CountingHub(golden_hub())
    runner = golden_runner(counting)
    lp = processor(log_with_hierarchy=hierarchy)
    for mode in ("train", "val", "test"):
        lp.get_log_after_iter(runner, 4, mode)
    assert counting.scalar_reads == 3 and counting.info_reads == 0
    for mode in ("val", "test"):
        lp.get_log_after_epoch(runner, 9, mode, with_non_scalar=True)
    assert counting.scalar_reads == 5 and counting.info_reads == 2


class _TailSpy:
    """Storage that records how many records each statistic reads."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.max_length = storage.max_length
        self.tails: list[int | None] = []

    def append(self, value: float, count: float) -> None:
        self._storage.append(value, count)

    def retained(self) -> int:
        return self._storage.retained()

    def totals(self):
        return self._storage.totals()

    def tail(self, n=None):
        self.tails.append(n)
        return self._storage.tail(n)

    def window(self, n):
        self.tails.append(n)
        return self._storage.window(n)


def test_cost_does_not_depend_on_history_length():
    updates = 50_000
    spies = {}
    scalars = {}
    for key in ("train/loss", "train/time", "train/data_time", "train/lr"):
        buffer = HistoryBuffer()
        for i in range(updates):
            buffer.update(1.0 + i % 7)
        spies[key] = buffer.storage = _TailSpy(buffer.storage)
        scalars[key] = buffer
    hub = MessageHub(f"log-processor-test-{next(_hub_names)}", log_scalars=scalars,
                     runtime_info={"eta": 10})
    lp = LogProcessor(custom_cfg=[
        {"data_src": "loss", "method_name": "mean", "log_name": "g", "window_size": "global"},
        {"data_src": "loss", "method_name": "max", "log_name": "e", "window_size": "epoch"},
    ])
    tag, _ = lp.format_iter(hub, "train", 3, iter=updates - 1, epoch=0, max_epochs=1,
                            dataloader_len=updates)
    assert tag["g"] == pytest.approx(np.mean([1.0 + i % 7 for i in range(updates)]))
    reads = [n for spy in spies.values() for n in spy.tails]
    assert reads and None not in reads
    assert max(reads) <= 10  # the default window and the epoch's 4 batches


def test_torch_is_never_imported():
    script = textwrap.dedent(
        """
        import sys
        from types import SimpleNamespace

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch must not be imported")

        sys.meta_path.insert(0, Blocker())
        from shmlog import LogProcessor, MessageHub
        hub = MessageHub("t")
        hub.update_scalar("val/loss", 1.0)
        hub.update_info("val/x", [1])
        lp = LogProcessor()
        lp.format_iter(hub, "val", 0, dataloader_len=1)
        lp.format_epoch(hub, "val", 0, dataloader_len=1, with_non_scalar=True)
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_formatting_leaves_the_hub_unchanged():
    hub = golden_hub()
    before = {k: (b.data[0].tolist(), tuple(b.totals())) for k, b in hub.log_scalars.items()}
    info_before = dict(hub.runtime_info)
    lp = processor()
    runner = golden_runner(hub)
    for mode in ("train", "val", "test"):
        lp.get_log_after_iter(runner, 4, mode)
    lp.get_log_after_epoch(runner, 9, "val", with_non_scalar=True)
    after = {k: (b.data[0].tolist(), tuple(b.totals())) for k, b in hub.log_scalars.items()}
    assert after == before and dict(hub.runtime_info) == info_before


def test_eta_of_is_the_average_time_since_the_start_times_the_iterations_left():
    from shmlog.format.progress import eta_of

    history = HistoryBuffer(max_length=4)  # retains 4, its totals count all 20
    for seconds in [1.0] * 10 + [0.5] * 10:
        history.update(seconds)
    assert eta_of(history, 119, 1000) == 0.75 * 880  # every update counts, not the window
    assert eta_of(history, 999, 1000) == 0.0

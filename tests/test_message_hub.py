"""MessageHub in one process: MMEngine's calls, checks and checkpoint format.

Outside a session a hub keeps its scalars and runtime info locally, exactly as
MMEngine's does; code written against MMEngine 0.10 must run unchanged, and
invalid input must be refused without leaving half an update behind.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from shmlog import HistoryBuffer, MessageHub
from shmlog.api import message_hub as message_hub_module
from shmlog.api.process import PROCESS
from shmlog.stats import history_buffer as history_buffer_module

# Pickled buffers here are shmlog's own: no MMEngine in this process.
pytestmark = pytest.mark.usefixtures("mmengine_not_in_use")

# -- fixtures --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_hubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local mode, an empty hub registry, and the previous registry put back after."""
    monkeypatch.setattr(PROCESS, "resolver", None)
    monkeypatch.setattr(history_buffer_module, "_WARNED_KEYS", set())
    saved = OrderedDict(MessageHub._instance_dict)
    MessageHub._instance_dict.clear()
    yield
    MessageHub._instance_dict.clear()
    MessageHub._instance_dict.update(saved)


@pytest.fixture
def hub() -> MessageHub:
    return MessageHub.get_instance("task")


@pytest.fixture(autouse=True)
def hub_warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the hub reports through its logger, captured instead of logged."""
    messages: list[str] = []
    monkeypatch.setattr(message_hub_module, "_warn", messages.append)
    return messages


class FakeTensor:
    """A stand-in for a torch tensor: ``numel`` and ``item`` only."""

    def __init__(self, *values: Any) -> None:
        self._values = list(values)

    def numel(self) -> int:
        return len(self._values)

    def item(self) -> Any:
        return self._values[0]

    def __repr__(self) -> str:
        return f"FakeTensor({', '.join(map(repr, self._values))})"


class Uncopyable:
    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise RuntimeError("no copies")


def snapshot(hub: MessageHub) -> dict[str, Any]:
    """Everything observable about a hub, as plain data."""
    return {
        "scalars": {
            key: (buffer.data[0].tolist(), buffer.data[1].tolist(), tuple(buffer.totals()))
            for key, buffer in hub.log_scalars.items()
        },
        "info": dict(hub.runtime_info),
        "resumed": dict(hub._resumed_keys),
    }


# -- the documented examples ---------------------------------------------------------


def test_update_and_get_scalars_documented_example(hub: MessageHub) -> None:
    hub.update_scalar("train/loss", 1, 1)
    assert hub.get_scalar("train/loss").current() == 1
    hub.update_scalar("train/loss", 3, 1)
    assert hub.get_scalar("train/loss").mean() == (1 + 3) / (1 + 1)
    hub.update_scalar("train/lr", 0.1, 1)
    hub.update_scalars(
        {"train/time": {"value": 0.1, "count": 1}, "train/data_time": {"value": 0.1, "count": 1}}
    )
    assert hub.get_scalar("train/time").current() == 0.1
    log_dict = hub.log_scalars
    assert list(log_dict) == ["train/loss", "train/lr", "train/time", "train/data_time"]
    for key, buffer in log_dict.items():
        assert isinstance(buffer, HistoryBuffer)
        assert hub.get_scalar(key) is buffer
    assert log_dict["train/loss"].data[0].tolist() == [1, 3]


def test_update_info_documented_example(hub: MessageHub) -> None:
    hub.update_info("iter", 1)
    assert hub.get_info("iter") == 1
    hub.update_info("iter", 2)
    assert hub.get_info("iter") == 2


def test_modules_share_a_hub_by_name() -> None:
    class LrUpdater:
        def __init__(self, name: str) -> None:
            self.message_hub = MessageHub.get_instance(name)

        def run(self) -> None:
            self.message_hub.update_scalar("train/lr", 0.001)

    class MetaUpdater:
        def __init__(self, name: str) -> None:
            self.message_hub = MessageHub.get_instance(name)

        def run(self) -> None:
            self.message_hub.update_info("meta", {"experiment": "demo", "repo": "mmdetection"})

    class LossUpdater:
        def __init__(self, name: str) -> None:
            self.message_hub = MessageHub.get_instance(name)

        def run(self) -> None:
            self.message_hub.update_scalar("train/loss", 0.1)

    runner_hub = MessageHub.get_instance("name")
    for updater in (LrUpdater("name"), MetaUpdater("name"), LossUpdater("name")):
        assert updater.message_hub is runner_hub
        updater.run()
    reader = MessageHub.get_instance("name")
    assert reader.get_scalar("train/lr").current() == 0.001
    assert reader.get_scalar("train/loss").current() == 0.1
    assert reader.get_info("meta") == {"experiment": "demo", "repo": "mmdetection"}


# -- scalars -----------------------------------------------------------------------------


def test_update_scalar_creates_a_named_buffer_with_the_default_max_length(hub: MessageHub) -> None:
    hub.update_scalar("train/loss", 2.0, 4)
    buffer = hub.get_scalar("train/loss")
    assert buffer.max_length == 1_000_000
    assert buffer.data[0].tolist() == [2.0]
    assert buffer.data[1].tolist() == [4.0]
    assert "'train/loss'" in repr(buffer)


def test_scalar_history_matches_a_list_model(hub: MessageHub) -> None:
    values = [math.sin(i) * 10 for i in range(300)]
    counts = [1 + i % 4 for i in range(300)]
    for value, count in zip(values, counts):
        hub.update_scalar("train/acc", value, count)
    buffer = hub.get_scalar("train/acc")
    assert buffer.data[0].tolist() == values
    assert math.isclose(buffer.mean(), math.fsum(values) / sum(counts), rel_tol=1e-12)
    assert math.isclose(
        buffer.mean(10), math.fsum(values[-10:]) / sum(counts[-10:]), rel_tol=1e-12
    )
    assert buffer.max(25) == max(values[-25:])
    assert buffer.min() == min(values)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(0.5), 0.5),
        (np.int64(3), 3.0),
        (np.array(1.5), 1.5),
        (np.array([[2.0]]), 2.0),
        (FakeTensor(0.25), 0.25),
        (FakeTensor(np.float64(4.0)), 4.0),
    ],
    ids=repr,
)
def test_update_scalar_accepts_numpy_and_tensors(
    hub: MessageHub, value: Any, expected: float
) -> None:
    hub.update_scalar("v", value, FakeTensor(2))
    assert hub.get_scalar("v").current() == expected
    assert hub.get_scalar("v").data[1].tolist() == [2.0]


def test_update_scalar_stores_nan_and_inf(hub: MessageHub) -> None:
    hub.update_scalar("loss", math.inf)
    hub.update_scalar("loss", math.nan)
    values = hub.get_scalar("loss").data[0]
    assert values[0] == math.inf
    assert math.isnan(values[1])


@pytest.mark.parametrize(
    ("value", "error", "mentions"),
    [
        (True, TypeError, "True"),
        ("0.5", TypeError, "'0.5'"),
        (None, TypeError, "None"),
        ([0.5], TypeError, "[0.5]"),
        ({"value": 0.5}, TypeError, "{'value': 0.5}"),
        (np.array([1.0, 2.0]), ValueError, "array([1., 2.])"),
        (FakeTensor(1.0, 2.0), ValueError, "FakeTensor(1.0, 2.0)"),
    ],
    ids=repr,
)
def test_refused_value_names_key_and_value_and_leaves_no_trace(
    hub: MessageHub, value: Any, error: type[Exception], mentions: str
) -> None:
    with pytest.raises(error) as caught:
        hub.update_scalar("train/loss", value)
    message = str(caught.value)
    assert "'train/loss'" in message and mentions in message and "expected" in message
    assert "train/loss" not in hub.log_scalars
    assert "train/loss" not in hub._resumed_keys
    # Nothing was recorded, so the key may still be logged with resumed=False.
    hub.update_scalar("train/loss", 1.0, resumed=False)
    assert "train/loss" not in hub.state_dict()["log_scalars"]


@pytest.mark.parametrize("count", [-1, math.nan, math.inf, True, "1"], ids=repr)
def test_refused_count_names_key(hub: MessageHub, count: Any) -> None:
    hub.update_scalar("train/loss", 1.0)
    with pytest.raises((TypeError, ValueError), match=r"'train/loss' count"):
        hub.update_scalar("train/loss", 2.0, count)
    assert hub.get_scalar("train/loss").data[0].tolist() == [1.0]


def test_errors_from_a_hub_buffer_name_its_key(hub: MessageHub) -> None:
    hub.update_scalar("val/acc", 0.5)
    buffer = hub.get_scalar("val/acc")
    with pytest.raises(TypeError, match="'val/acc' value"):
        buffer.update("high")
    with pytest.raises(ValueError, match="'val/acc' window_size"):
        buffer.mean(0)


def test_short_window_warns_once_per_key(recwarn: pytest.WarningsRecorder) -> None:
    short = {"a": HistoryBuffer(max_length=2), "b": HistoryBuffer(max_length=2)}
    hub = MessageHub.get_instance("short", log_scalars=short)
    for key in ("a", "b"):
        for value in range(5):
            hub.update_scalar(key, value)
    for _ in range(3):
        assert hub.get_scalar("a").mean(4) == 3.5
        assert hub.get_scalar("b").max(3) == 4.0
    # The same key in another hub has been warned about already.
    other = MessageHub.get_instance("other", log_scalars={"a": HistoryBuffer(max_length=2)})
    for value in range(5):
        other.update_scalar("a", value)
    other.get_scalar("a").mean(4)
    messages = [str(w.message) for w in recwarn if "window_size" in str(w.message)]
    assert len(messages) == 2
    assert messages[0].startswith("'a'") and messages[1].startswith("'b'")


def test_get_scalar_of_an_unknown_key_names_key_and_hub(hub: MessageHub) -> None:
    hub.update_scalar("train/loss", 1.0)
    with pytest.raises(KeyError) as caught:
        hub.get_scalar("train/acc")
    message = str(caught.value)
    assert "'train/acc'" in message and "'task'" in message and "train/loss" in message


def test_log_scalars_is_the_live_dict(hub: MessageHub) -> None:
    scalars = hub.log_scalars
    hub.update_scalar("x", 1.0)
    assert "x" in scalars
    assert hub.log_scalars is scalars


# -- update_scalars ---------------------------------------------------------------------


def test_update_scalars_plain_values_and_dicts(hub: MessageHub) -> None:
    hub.update_scalars({"a": 1, "b": {"value": 2.0, "count": 3}, "c": {"value": np.float32(4)}})
    hub.update_scalars({"a": FakeTensor(5.0), "b": {"value": np.array([6.0]), "count": 1}})
    assert hub.get_scalar("a").data[0].tolist() == [1.0, 5.0]
    assert hub.get_scalar("a").data[1].tolist() == [1.0, 1.0]
    assert hub.get_scalar("b").data[1].tolist() == [3.0, 1.0]
    assert hub.get_scalar("b").mean() == (2.0 + 6.0) / (3 + 1)
    assert hub.get_scalar("c").data[1].tolist() == [1.0]


def test_update_scalars_passes_resumed(hub: MessageHub) -> None:
    hub.update_scalars({"a": 1, "b": 2}, resumed=False)
    assert hub._resumed_keys == {"a": False, "b": False}
    assert not hub.state_dict()["log_scalars"]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"value": "x"}, TypeError),
        ({"count": 2}, KeyError),
        ({"value": 1.0, "count": -2}, ValueError),
        (None, TypeError),
        (np.ones(3), ValueError),
    ],
    ids=repr,
)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_update_scalars_with_a_bad_entry_updates_nothing(
    hub: MessageHub, bad: Any, error: type[Exception], position: int
) -> None:
    hub.update_scalar("a", 0.5)
    before = snapshot(hub)
    entries: list[tuple[str, Any]] = [("a", 1.0), ("new", {"value": 2.0, "count": 2})]
    entries.insert(position, ("bad", bad))
    with pytest.raises(error, match="'bad'"):
        hub.update_scalars(dict(entries))
    assert snapshot(hub) == before


def test_update_scalars_with_a_resumed_conflict_updates_nothing(hub: MessageHub) -> None:
    hub.update_scalar("a", 0.5, resumed=True)
    before = snapshot(hub)
    with pytest.raises(ValueError, match="'a' was logged with resumed=True"):
        hub.update_scalars({"b": 1.0, "a": 2.0}, resumed=False)
    with pytest.raises(TypeError, match="resumed"):
        hub.update_scalars({"b": 1.0}, resumed="yes")  # type: ignore[arg-type]
    assert snapshot(hub) == before


@pytest.mark.parametrize("log_dict", [[("a", 1)], None, "a"], ids=repr)
def test_update_scalars_needs_a_dict(hub: MessageHub, log_dict: Any) -> None:
    with pytest.raises(TypeError, match="dict"):
        hub.update_scalars(log_dict)


# -- runtime info ----------------------------------------------------------------------


def test_runtime_info_holds_any_object_by_reference(hub: MessageHub) -> None:
    meta = {"seed": 0, "classes": ["cat", "dog"]}
    hub.update_info("meta", meta)
    assert hub.get_info("meta") is meta
    hub.update_info("none", None)
    assert "none" in hub.runtime_info
    assert hub.get_info("none", "default") is None


def test_get_info_default(hub: MessageHub) -> None:
    assert hub.get_info("missing") is None
    assert hub.get_info("missing", 7) == 7
    hub.update_info("present", 0)
    assert hub.get_info("present", 7) == 0


def test_pop_info(hub: MessageHub) -> None:
    hub.update_info("epoch", 3)
    assert hub.pop_info("epoch") == 3
    assert "epoch" not in hub.runtime_info
    assert hub.get_info("epoch") is None
    assert hub.pop_info("epoch") is None
    assert hub.pop_info("epoch", "gone") == "gone"


def test_update_info_dict(hub: MessageHub) -> None:
    hub.update_info("iter", 0)
    hub.update_info_dict({"iter": 10, "epoch": 1, "lr_policy": "cos"})
    assert hub.runtime_info == OrderedDict([("iter", 10), ("epoch", 1), ("lr_policy", "cos")])
    with pytest.raises(TypeError, match="dict"):
        hub.update_info_dict([("iter", 11)])  # type: ignore[arg-type]


def test_runtime_info_and_scalars_are_separate(hub: MessageHub) -> None:
    hub.update_info("iter", 5)
    assert "iter" not in hub.log_scalars
    with pytest.raises(KeyError):
        hub.get_scalar("iter")
    hub.update_scalar("loss", 1.0)
    assert hub.get_info("loss") is None


# -- resumed keys and checkpoints ----------------------------------------------------------


@pytest.mark.parametrize(
    "log",
    [
        lambda hub, key, resumed: hub.update_scalar(key, 1.0, resumed=resumed),
        lambda hub, key, resumed: hub.update_info(key, 1, resumed=resumed),
        lambda hub, key, resumed: hub.update_scalars({key: 1.0}, resumed=resumed),
        lambda hub, key, resumed: hub.update_info_dict({key: 1}, resumed=resumed),
    ],
    ids=["update_scalar", "update_info", "update_scalars", "update_info_dict"],
)
@pytest.mark.parametrize("first", [True, False])
def test_changing_resumed_for_a_key_is_an_error(hub: MessageHub, log: Any, first: bool) -> None:
    log(hub, "k", first)
    log(hub, "k", first)
    with pytest.raises(ValueError, match=f"'k' was logged with resumed={first}"):
        log(hub, "k", not first)
    assert hub._resumed_keys["k"] is first


def test_resumed_must_be_a_bool(hub: MessageHub) -> None:
    with pytest.raises(TypeError, match="resumed"):
        hub.update_scalar("k", 1.0, resumed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resumed"):
        hub.update_info("k", 1.0, resumed=None)  # type: ignore[arg-type]
    assert "k" not in hub.log_scalars and "k" not in hub.runtime_info


def _populated(hub: MessageHub) -> MessageHub:
    for i in range(5):
        hub.update_scalar("train/loss", 1.0 / (i + 1), 2)
        hub.update_scalar("train/time", 0.1 * i, resumed=False)
    hub.update_info("iter", 5)
    hub.update_info("cache", [1, 2, 3], resumed=False)
    hub.update_info("meta", {"seed": 3})
    return hub


def test_state_dict_keeps_only_resumed_keys(hub: MessageHub) -> None:
    state = _populated(hub).state_dict()
    assert set(state) == {"log_scalars", "runtime_info", "resumed_keys"}
    assert list(state["log_scalars"]) == ["train/loss"]
    assert list(state["runtime_info"]) == ["iter", "meta"]
    assert state["resumed_keys"] == {
        "train/loss": True,
        "train/time": False,
        "iter": True,
        "cache": False,
        "meta": True,
    }


def test_state_dict_holds_copies(hub: MessageHub) -> None:
    state = _populated(hub).state_dict()
    saved = state["log_scalars"]["train/loss"]
    assert saved is not hub.get_scalar("train/loss")
    assert state["runtime_info"]["meta"] is not hub.get_info("meta")
    hub.update_scalar("train/loss", 100.0)
    hub.get_info("meta")["seed"] = 99
    assert saved.data[0].tolist() == [1.0 / (i + 1) for i in range(5)]
    assert state["runtime_info"]["meta"] == {"seed": 3}


def test_state_dict_round_trip_through_a_checkpoint(
    hub: MessageHub, hub_warnings: list[str]
) -> None:
    _populated(hub)
    checkpoint = pickle.dumps(hub.state_dict())
    resumed = MessageHub.get_instance("resumed")
    resumed.load_state_dict(pickle.loads(checkpoint))
    original = snapshot(hub)
    restored = snapshot(resumed)
    assert restored["scalars"] == {"train/loss": original["scalars"]["train/loss"]}
    assert restored["info"] == {"iter": 5, "meta": {"seed": 3}}
    # resumed=False keys were not saved, so they are skipped with a warning each.
    assert restored["resumed"] == {k: v for k, v in original["resumed"].items() if v}
    assert len(hub_warnings) == 2
    assert "'train/time'" in hub_warnings[0] and "'cache'" in hub_warnings[1]
    # Training goes on from where it stopped, with the same statistics.
    for target in (hub, resumed):
        target.update_scalar("train/loss", 0.05, 2)
    assert resumed.get_scalar("train/loss").mean() == hub.get_scalar("train/loss").mean()
    assert resumed.get_scalar("train/loss").mean(3) == hub.get_scalar("train/loss").mean(3)


def test_loaded_scalars_keep_totals_over_dropped_values() -> None:
    values = [float(v) for v in range(10)]
    hub = MessageHub.get_instance("short", log_scalars={"loss": HistoryBuffer(max_length=4)})
    for value in values:
        hub.update_scalar("loss", value)
    resumed = MessageHub.get_instance("resumed")
    resumed.load_state_dict(hub.state_dict())
    buffer = resumed.get_scalar("loss")
    assert buffer.data[0].tolist() == values[-4:]
    assert buffer.max_length == 4
    assert buffer.mean() == sum(values) / len(values)
    assert buffer.min() == min(values)
    resumed.update_scalar("loss", 10.0)
    assert buffer.mean() == sum(values + [10.0]) / (len(values) + 1)


def test_loaded_state_is_independent_of_the_state_dict(hub: MessageHub) -> None:
    state = _populated(hub).state_dict()
    resumed = MessageHub.get_instance("resumed")
    resumed.load_state_dict(state)
    resumed.update_scalar("train/loss", 7.0)
    resumed.get_info("meta")["seed"] = 42
    assert state["log_scalars"]["train/loss"].totals().updates == 5
    assert state["runtime_info"]["meta"] == {"seed": 3}
    # Loading the same state twice gives the same result again.
    again = MessageHub.get_instance("again")
    again.load_state_dict(state)
    again.load_state_dict(state)
    assert again.get_scalar("train/loss").totals().updates == 5


def test_loaded_resumed_keys_keep_their_flags(hub: MessageHub) -> None:
    resumed = MessageHub.get_instance("resumed")
    resumed.load_state_dict(_populated(hub).state_dict())
    resumed.update_scalar("train/loss", 1.0)  # resumed=True as saved
    with pytest.raises(ValueError, match="resumed=True"):
        resumed.update_scalar("train/loss", 1.0, resumed=False)
    # A resumed=False key has no value in the state dict and is not restored.
    assert "train/time" not in resumed._resumed_keys
    resumed.update_scalar("train/time", 1.0, resumed=True)


def test_load_state_dict_reports_what_it_skips(hub: MessageHub, hub_warnings: list[str]) -> None:
    state = {
        "log_scalars": OrderedDict([("old", [1, 2, 3]), ("loss", HistoryBuffer([1.0], [1.0]))]),
        "runtime_info": OrderedDict([("iter", 3), ("quiet", 0)]),
        "resumed_keys": OrderedDict(
            [("old", True), ("loss", True), ("iter", True), ("quiet", False), ("ghost", True)]
        ),
    }
    hub.load_state_dict(state)
    assert list(hub.log_scalars) == ["loss"]
    assert hub.runtime_info == {"iter": 3, "quiet": 0}
    assert hub._resumed_keys == {"loss": True, "iter": True, "quiet": False}
    assert "quiet" not in hub.state_dict()["runtime_info"]
    assert len(hub_warnings) == 4
    joined = "\n".join(hub_warnings)
    for key in ("'old'", "'ghost'", "'quiet'"):
        assert key in joined


def test_uncopyable_runtime_info_is_kept_by_reference(
    hub: MessageHub, hub_warnings: list[str]
) -> None:
    handle = Uncopyable()
    hub.update_info("handle", handle)
    state = hub.state_dict()
    assert state["runtime_info"]["handle"] is handle
    resumed = MessageHub.get_instance("resumed")
    resumed.load_state_dict(state)
    assert resumed.get_info("handle") is handle
    assert len(hub_warnings) == 2 and all("'handle'" in m for m in hub_warnings)


@pytest.mark.parametrize("missing", ["log_scalars", "runtime_info", "resumed_keys"])
def test_load_state_dict_needs_all_three_parts(hub: MessageHub, missing: str) -> None:
    state = {"log_scalars": {}, "runtime_info": {}, "resumed_keys": {}}
    del state[missing]
    with pytest.raises(KeyError, match=missing):
        hub.load_state_dict(state)


def test_load_state_dict_refuses_other_types(hub: MessageHub) -> None:
    with pytest.raises(TypeError, match="state_dict"):
        hub.load_state_dict([("log_scalars", {})])  # type: ignore[arg-type]


def test_load_state_dict_from_a_hub_copies_everything(hub: MessageHub) -> None:
    source = _populated(MessageHub("source"))
    hub.load_state_dict(source)
    assert snapshot(hub) == snapshot(source)
    hub.update_scalar("train/loss", 9.0)
    hub.runtime_info["cache"].append(4)
    assert source.get_scalar("train/loss").totals().updates == 5
    assert source.get_info("cache") == [1, 2, 3]


# -- construction and pickling ------------------------------------------------------------


def test_construction_with_initial_state() -> None:
    loss = HistoryBuffer([1.0, 2.0], [1.0, 1.0])
    hub = MessageHub(
        "init",
        log_scalars={"loss": loss},
        runtime_info={"task": "det"},
        resumed_keys={"loss": True, "task": False},
    )
    assert hub.get_scalar("loss") is loss
    assert hub.get_info("task") == "det"
    assert list(hub.state_dict()["log_scalars"]) == ["loss"]
    assert not hub.state_dict()["runtime_info"]
    with pytest.raises(ValueError, match="resumed=False"):
        hub.update_info("task", "seg")
    with pytest.raises(TypeError, match="count"):
        loss.update(3.0, "many")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"log_scalars": {"loss": [1, 2]}},
        {"log_scalars": [("loss", HistoryBuffer())]},
        {"runtime_info": "iter=1"},
        {"resumed_keys": [("loss", True)]},
    ],
    ids=repr,
)
def test_construction_refuses_bad_initial_state(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        MessageHub("bad", **kwargs)


def test_pickled_hub_keeps_everything() -> None:
    hub = MessageHub.get_instance("task", log_scalars={"short": HistoryBuffer(max_length=2)})
    _populated(hub)
    for value in range(6):
        hub.update_scalar("short", float(value))
    restored = pickle.loads(pickle.dumps(hub))
    assert isinstance(restored, MessageHub)
    assert restored.instance_name == "task"
    assert snapshot(restored) == snapshot(hub)
    assert restored.get_scalar("short").mean() == sum(range(6)) / 6
    # The copy is detached: its updates do not reach the registered hub.
    assert MessageHub.get_instance("task") is hub
    restored.update_scalar("train/loss", 5.0)
    restored.update_info("iter", 6)
    assert hub.get_scalar("train/loss").totals().updates == 5
    assert hub.get_info("iter") == 5
    with pytest.raises(ValueError, match="resumed=False"):
        restored.update_scalar("train/time", 1.0)


def test_deepcopied_hub_is_independent(hub: MessageHub) -> None:
    _populated(hub)
    clone = copy.deepcopy(hub)
    assert snapshot(clone) == snapshot(hub)
    clone.update_scalar("train/loss", 3.0)
    assert hub.get_scalar("train/loss").totals().updates == 5

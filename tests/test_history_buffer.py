"""HistoryBuffer against MMEngine's contract and against a plain-list model.

HistoryBuffer keeps MMEngine's surface but stores its history in a ring with
running totals.  The explicit tests pin the documented examples and the edge
cases; the hypothesis tests replay random update sequences (small max_length
included, so the ring wraps) on a buffer and on a list that keeps every
update, and require every statistic to agree.
"""

from __future__ import annotations

import copy
import math
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from shmlog import HistoryBuffer
from shmlog.stats import history_buffer as history_buffer_module
from shmlog.stats.storage import LocalRing

# Pickled buffers here are shmlog's own: no MMEngine in this process.
pytestmark = pytest.mark.usefixtures("mmengine_not_in_use")

# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_statistics() -> Iterator[None]:
    """Registered statistics are class-level: undo whatever a test registers."""
    saved = dict(HistoryBuffer._statistics_methods)
    yield
    HistoryBuffer._statistics_methods.clear()
    HistoryBuffer._statistics_methods.update(saved)


@pytest.fixture(autouse=True)
def _forget_warned_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-warning-per-key memory is process-wide; start each test empty."""
    monkeypatch.setattr(history_buffer_module, "_WARNED_KEYS", set())


class FakeTensor:
    """A one-element stand-in for a torch tensor (``numel``/``item`` only)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def numel(self) -> int:
        return 1

    def item(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"FakeTensor({self._value!r})"


def plain(value: Any) -> float:
    """The float the model stores for an accepted input."""
    if isinstance(value, FakeTensor):
        return float(value.item())
    if isinstance(value, np.ndarray):
        return float(value.reshape(-1)[0])
    return float(value)


def short_window_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and "window_size" in str(w.message)
    ]


class ListModel:
    """Every update in a list; MMEngine's statistics, with dropped values kept."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.values: list[float] = []
        self.counts: list[float] = []
        self.warned = False

    def update(self, value: float, count: float) -> None:
        self.values.append(value)
        self.counts.append(count)

    @property
    def retained(self) -> int:
        return min(len(self.values), self.max_length)

    def data(self) -> tuple[list[float], list[float]]:
        kept = self.retained
        return self.values[len(self.values) - kept :], self.counts[len(self.counts) - kept :]

    def window(self, window: int | None) -> tuple[list[float], list[float]]:
        """The records a statistic over ``window`` uses."""
        if window is None or window >= len(self.values):
            return self.values, self.counts
        values, counts = self.data()
        take = min(window, len(values))
        return values[-take:], counts[-take:]

    def expects_warning(self, window: int | None) -> bool:
        """Whether a statistic over ``window`` should warn now (once per buffer)."""
        if window is None or self.warned:
            return False
        if self.retained < window < len(self.values):
            self.warned = True
            return True
        return False


def assert_sum_close(actual: float, values: list[float]) -> None:
    scale = math.fsum(abs(v) for v in values)
    assert math.isclose(actual, math.fsum(values), rel_tol=1e-12, abs_tol=1e-12 * scale + 1e-300)


def assert_mean_close(actual: float, values: list[float], counts: list[float]) -> None:
    denominator = math.fsum(counts)
    expected = math.fsum(values) / denominator
    scale = math.fsum(abs(v) for v in values) / denominator
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12 * scale)


def assert_same_float(actual: float, expected: float) -> None:
    """Exact equality where NaN equals NaN."""
    if math.isnan(expected):
        assert math.isnan(actual), (actual, expected)
    else:
        assert actual == expected, (actual, expected)


def check_against_model(
    buffer: HistoryBuffer,
    model: ListModel,
    windows: list[int | None],
    call: Callable[[HistoryBuffer, str, int | None], Any],
) -> None:
    """Compare every statistic of ``buffer`` with ``model`` (finite values)."""
    values, counts = buffer.data
    model_values, model_counts = model.data()
    assert values.tolist() == model_values
    assert counts.tolist() == model_counts
    assert len(buffer) == model.retained

    totals = buffer.totals()
    assert totals.updates == len(model.values)
    assert_sum_close(totals.value_sum, model.values)
    assert_sum_close(totals.count_sum, model.counts)

    if not model.values:
        for name in ("mean", "min", "max"):
            with pytest.raises(ValueError, match="empty"):
                call(buffer, name, None)
        with pytest.raises(ValueError, match="empty"):
            buffer.current()
        return

    assert totals.minimum == min(model.values)
    assert totals.maximum == max(model.values)
    assert buffer.current() == model.values[-1]
    assert buffer.statistics("current") == model.values[-1]

    for window in windows:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mean = call(buffer, "mean", window)
            minimum = call(buffer, "min", window)
            maximum = call(buffer, "max", window)
        assert len(short_window_warnings(caught)) == int(model.expects_warning(window))
        used_values, used_counts = model.window(window)
        assert_mean_close(mean, used_values, used_counts)
        assert minimum == min(used_values)
        assert maximum == max(used_values)


def direct(buffer: HistoryBuffer, name: str, window: int | None) -> Any:
    return getattr(buffer, name)(window)


def by_name(buffer: HistoryBuffer, name: str, window: int | None) -> Any:
    return buffer.statistics(name, window)


def by_keyword(buffer: HistoryBuffer, name: str, window: int | None) -> Any:
    return buffer.statistics(name, window_size=window)


# -- construction ------------------------------------------------------------------


def test_default_construction_is_empty_with_mmengine_max_length() -> None:
    buffer = HistoryBuffer()
    values, counts = buffer.data
    assert values.size == 0 and counts.size == 0
    assert buffer.max_length == 1_000_000
    assert len(buffer) == 0
    assert buffer.totals().updates == 0


def test_construction_from_lists_keeps_values_and_counts() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 2, 3])
    values, counts = buffer.data
    assert values.tolist() == [1, 2, 3]
    assert counts.tolist() == [1, 2, 3]


def test_construction_accepts_arrays_and_mixed_scalars() -> None:
    buffer = HistoryBuffer(np.array([1.5, 2.5]), [np.int64(2), FakeTensor(3)])
    assert buffer.data[0].tolist() == [1.5, 2.5]
    assert buffer.data[1].tolist() == [2.0, 3.0]


def test_history_longer_than_max_length_warns_and_keeps_the_newest() -> None:
    with pytest.warns(UserWarning, match=r"history buffer\(3\) exceeds the max_length\(2\)"):
        buffer = HistoryBuffer([1, 2, 3], [1, 2, 3], max_length=2)
    values, counts = buffer.data
    assert values.tolist() == [2, 3]
    assert counts.tolist() == [2, 3]
    assert buffer.max_length == 2


def test_history_within_max_length_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        buffer = HistoryBuffer([1, 2], [1, 1], max_length=2)
    assert buffer.data[0].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("log_history", "count_history"), [([1, 2, 3], [1, 1]), ([1], []), ([], [1])]
)
def test_lengths_that_differ_are_refused(log_history: list[int], count_history: list[int]) -> None:
    with pytest.raises(ValueError, match="same length"):
        HistoryBuffer(log_history, count_history)


@pytest.mark.parametrize(
    ("max_length", "error"),
    [(0, ValueError), (-5, ValueError), (2.0, TypeError), ("10", TypeError), (True, TypeError)],
)
def test_bad_max_length_is_refused(max_length: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_length"):
        HistoryBuffer(max_length=max_length)


def test_bad_initial_values_and_counts_are_refused() -> None:
    with pytest.raises(TypeError, match="log_history value.*'a'"):
        HistoryBuffer([1, "a"], [1, 1])
    with pytest.raises(ValueError, match="count_history: expected finite numbers, got nan"):
        HistoryBuffer([1, 2], [1, float("nan")])
    with pytest.raises(AssertionError, match="same length, got 2 and 1"):
        HistoryBuffer([1, 2], [1])


def test_an_initial_history_keeps_its_counts_but_update_refuses_negative_ones() -> None:
    buffer = HistoryBuffer([4.0, 2.0], [-1, 2])
    assert buffer.data[1].tolist() == [-1.0, 2.0]
    assert buffer.mean() == 6.0  # (4 + 2) / (-1 + 2): the history as given
    with pytest.raises(ValueError, match="count: expected a finite number >= 0, got -1"):
        buffer.update(1.0, -1)


@pytest.mark.parametrize("nest", [np.array, list], ids=["array", "list"])
def test_an_initial_history_of_any_shape_is_read_in_c_order(nest) -> None:
    buffer = HistoryBuffer(nest([[1, 2], [3, 4]]), nest([[1, 1], [1, 2]]))
    assert buffer.data[0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert buffer.data[1].tolist() == [1.0, 1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="nested to one depth"):
        HistoryBuffer([[1, 2], [3]], [1, 1, 1])


def test_a_long_initial_history_is_converted_in_one_step() -> None:
    """A million values from an array and from a list (MMEngine's own tests build such buffers)."""
    values = np.arange(1_000_000, dtype=np.int64)
    buffer = HistoryBuffer(values, np.ones(1_000_000), max_length=1_000_000)
    assert len(buffer) == 1_000_000 and buffer.max() == 999_999.0
    listed = HistoryBuffer([[-1] + [1] * 999_999], [[-1] + [1] * 999_999])
    listed.update(1)
    assert listed.data[0][0] == 1.0 and len(listed) == 1_000_000


def test_bool_and_string_elements_are_named_in_the_error() -> None:
    with pytest.raises(TypeError, match="log_history value: .* got bool True"):
        HistoryBuffer([True, 2], [1, 1])
    with pytest.raises(TypeError, match="got str 'x'"):
        HistoryBuffer(np.array(["x"]), [1])
    with pytest.raises(TypeError, match="expected a sequence of numbers .* got int 5"):
        HistoryBuffer(5, [1])


# -- update and data ---------------------------------------------------------------


def test_update_appends_with_default_count_one() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    buffer.update(4)
    assert buffer.data[0].tolist() == [1, 2, 3, 4]
    assert buffer.data[1].tolist() == [1, 1, 1, 1]
    buffer.update(5, 2)
    assert buffer.data[0].tolist() == [1, 2, 3, 4, 5]
    assert buffer.data[1].tolist() == [1, 1, 1, 1, 2]


@pytest.mark.parametrize(
    "value",
    [7, 7.0, np.float32(7), np.int16(7), np.array(7.0), np.array([7]), FakeTensor(7.0)],
    ids=repr,
)
def test_update_accepts_scalars_arrays_and_tensors(value: Any) -> None:
    buffer = HistoryBuffer()
    buffer.update(value, FakeTensor(2))
    assert buffer.current() == 7.0
    assert buffer.data[1].tolist() == [2.0]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("1", TypeError),
        (None, TypeError),
        ([1], TypeError),
        ({"value": 1}, TypeError),
        (np.array([1.0, 2.0]), ValueError),
    ],
    ids=repr,
)
def test_refused_update_leaves_the_buffer_unchanged(value: Any, error: type[Exception]) -> None:
    buffer = HistoryBuffer([1.0], [1.0])
    with pytest.raises(error, match="expected"):
        buffer.update(value)
    with pytest.raises(ValueError, match="count"):
        buffer.update(2.0, -1)
    with pytest.raises(ValueError, match="count"):
        buffer.update(2.0, math.nan)
    assert buffer.data[0].tolist() == [1.0]
    assert buffer.totals().updates == 1


def test_data_is_a_copy() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    values, counts = buffer.data
    values[:] = 0
    counts[:] = 0
    assert buffer.data[0].tolist() == [1, 2, 3]
    assert buffer.mean() == 2


def test_count_zero_is_stored() -> None:
    buffer = HistoryBuffer()
    buffer.update(4.0, 0)
    buffer.update(2.0, 2)
    assert buffer.data[1].tolist() == [0.0, 2.0]
    assert buffer.mean() == 3.0


# -- statistics: the documented examples ------------------------------------------


def test_basic_statistics_documented_example() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    assert buffer.min(2) == 2
    assert buffer.min() == 1
    assert buffer.max(2) == 3
    assert buffer.max() == 3
    assert buffer.mean(2) == 2.5
    assert buffer.mean() == 2


def test_mean_divides_by_the_sum_of_counts() -> None:
    buffer = HistoryBuffer([1, 2, 3], [2, 2, 2])
    assert buffer.mean() == 1
    assert buffer.mean(2) == (2 + 3) / (2 + 2)


def test_current_is_the_latest_value() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    buffer.update(4, 1)
    assert buffer.current() == 4


def test_statistics_by_name_documented_example() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    assert buffer.statistics("mean") == 2
    assert buffer.statistics("mean", 2) == 2.5
    assert buffer.statistics("mean", window_size=2) == 2.5
    assert buffer.statistics("max", 1) == 3
    assert buffer.statistics("current") == 3


def test_statistics_with_wrong_arguments_is_a_type_error() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    with pytest.raises(TypeError):
        buffer.statistics("mean", 2, 3)
    with pytest.raises(TypeError):
        buffer.statistics("current", 1)
    with pytest.raises(TypeError):
        buffer.statistics("min", window=2)


def test_statistics_with_an_unknown_name_is_a_key_error() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    with pytest.raises(KeyError, match="'data' is not a registered") as caught:
        buffer.statistics("data")
    assert "mean" in str(caught.value)


def test_statistics_results_are_numpy_floats() -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    for name in ("mean", "min", "max"):
        assert isinstance(buffer.statistics(name), np.floating)
        assert isinstance(buffer.statistics(name, 2), np.floating)
    assert isinstance(buffer.current(), np.floating)


@pytest.mark.parametrize("name", ["mean", "min", "max", "current"])
def test_statistics_of_an_empty_buffer_are_value_errors(name: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        HistoryBuffer().statistics(name)


@pytest.mark.parametrize(("window", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
@pytest.mark.parametrize("name", ["mean", "min", "max"])
def test_bad_windows_are_refused(name: str, window: Any, error: type[Exception]) -> None:
    buffer = HistoryBuffer([1, 2, 3], [1, 1, 1])
    with pytest.raises(error, match="window_size"):
        buffer.statistics(name, window)


def test_documented_use_case_matches_a_list_model() -> None:
    logs = {"lr": HistoryBuffer(), "loss": HistoryBuffer()}
    model: dict[str, list[float]] = {"lr": [], "loss": []}
    max_iter, log_interval = 10, 5
    reported = []
    for iteration in range(1, max_iter + 1):
        lr = iteration / max_iter * 0.1
        loss = 1 / iteration
        for key, value in (("lr", lr), ("loss", loss)):
            logs[key].update(value, 1)
            model[key].append(value)
        if iteration % log_interval == 0:
            latest_lr = logs["lr"].statistics("current")
            mean_loss = logs["loss"].statistics("mean", log_interval)
            assert latest_lr == model["lr"][-1]
            assert math.isclose(mean_loss, sum(model["loss"][-log_interval:]) / log_interval)
            reported.append((latest_lr, mean_loss))
    # The numbers the documentation prints for this loop.
    assert [lr for lr, _ in reported] == [0.05, 0.1]
    assert math.isclose(reported[0][1], 0.45666666666666667)
    assert math.isclose(reported[1][1], 0.12912698412698415)


# -- registering statistics -------------------------------------------------------------


def test_register_statistics_documented_weighted_mean() -> None:
    @HistoryBuffer.register_statistics
    def weighted_mean(self: HistoryBuffer, window_size: int, weight: list[float]) -> float:
        assert len(weight) == window_size
        return (self._log_history[-window_size:] * np.array(weight)).sum() / self._count_history[
            -window_size:
        ].sum()

    buffer = HistoryBuffer([1, 2], [1, 1])
    assert buffer.statistics("weighted_mean", 2, [2, 1]) == (2 * 1 + 1 * 2) / (1 + 1)
    assert buffer.statistics("weighted_mean", window_size=1, weight=[3]) == 2 * 3


def test_register_statistics_returns_the_function_and_is_class_wide() -> None:
    def spread(self: HistoryBuffer, window_size: int | None = None) -> float:
        return self.max(window_size) - self.min(window_size)

    assert HistoryBuffer.register_statistics(spread) is spread
    assert HistoryBuffer([1, 5, 2], [1, 1, 1]).statistics("spread") == 4
    assert HistoryBuffer([1, 5, 2], [1, 1, 1]).statistics("spread", 1) == 0


@pytest.mark.parametrize("name", ["mean", "min", "max", "current"])
def test_registering_a_builtin_name_again_is_refused(name: str) -> None:
    def method(self: HistoryBuffer) -> float:
        return 0.0

    method.__name__ = name
    with pytest.raises(ValueError, match=f"'{name}' is already registered"):
        HistoryBuffer.register_statistics(method)
    assert HistoryBuffer([1, 2, 3], [1, 1, 1]).statistics("mean") == 2


def test_registering_the_same_custom_name_twice_is_refused() -> None:
    def last_two(self: HistoryBuffer) -> list[float]:
        return self._log_history[-2:].tolist()

    HistoryBuffer.register_statistics(last_two)
    with pytest.raises(ValueError, match="'last_two'"):
        HistoryBuffer.register_statistics(last_two)


def test_mmengine_style_statistics_see_the_history_in_order_after_wrapping() -> None:
    @HistoryBuffer.register_statistics
    def history(self: HistoryBuffer, window_size: int) -> tuple[list[float], list[float]]:
        return (
            self._log_history[-window_size:].tolist(),
            self._count_history[-window_size:].tolist(),
        )

    buffer = HistoryBuffer(max_length=4)
    for value in range(11):
        buffer.update(value, value + 1)
    assert buffer.statistics("history", 3) == ([8.0, 9.0, 10.0], [9.0, 10.0, 11.0])
    assert buffer.statistics("history", 4) == ([7.0, 8.0, 9.0, 10.0], [8.0, 9.0, 10.0, 11.0])


def test_history_views_cannot_change_the_buffer() -> None:
    buffer = HistoryBuffer([1.0, 2.0], [1.0, 1.0])
    view = buffer._log_history
    try:
        view[0] = 100.0
    except ValueError:
        pass  # read-only view
    assert buffer.data[0].tolist() == [1.0, 2.0]


# -- the ring: global statistics, short windows, storage ------------------------------


def test_global_statistics_cover_values_the_ring_dropped() -> None:
    buffer = HistoryBuffer(max_length=3)
    values = [5.0, -2.0, 9.0, 1.0, 3.0, 4.0, 2.0]
    for value in values:
        buffer.update(value, 2)
    assert buffer.data[0].tolist() == values[-3:]
    assert buffer.min() == min(values)
    assert buffer.max() == max(values)
    assert buffer.mean() == sum(values) / (2 * len(values))
    # A window as long as the whole run is global as well.
    assert buffer.min(len(values)) == min(values)
    assert buffer.mean(len(values) + 100) == sum(values) / (2 * len(values))


def test_window_within_the_ring_uses_only_that_window() -> None:
    buffer = HistoryBuffer(max_length=4)
    values = [float(v) for v in range(20)]
    for value in values:
        buffer.update(value)
    for window in (1, 2, 3, 4):
        assert buffer.mean(window) == sum(values[-window:]) / window
        assert buffer.min(window) == min(values[-window:])
        assert buffer.max(window) == max(values[-window:])


def test_window_past_the_retained_records_warns_once_and_uses_them() -> None:
    buffer = HistoryBuffer(max_length=3)
    values = [float(v) for v in range(10)]
    for value in values:
        buffer.update(value)
    with pytest.warns(UserWarning, match=r"window_size 5 is longer than the 3 records retained"):
        assert buffer.mean(5) == sum(values[-3:]) / 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert buffer.min(6) == min(values[-3:])
        assert buffer.max(9) == max(values[-3:])
        assert buffer.mean(5) == sum(values[-3:]) / 3
        assert buffer.mean(10) == sum(values) / 10  # global: no warning needed


def test_each_unnamed_buffer_warns_once_for_itself() -> None:
    # Buffers created and dropped in turn may share an id(); each still warns.
    for _ in range(5):
        buffer = HistoryBuffer(max_length=2)
        for value in range(6):
            buffer.update(value)
        with pytest.warns(UserWarning, match="window_size 4"):
            buffer.mean(4)
        del buffer


def test_empty_buffer_does_not_allocate_max_length() -> None:
    buffer = HistoryBuffer()
    storage = buffer.storage
    assert isinstance(storage, LocalRing)
    assert storage._values.nbytes + storage._counts.nbytes <= 1024
    buffer.update(1.0)
    assert storage._values.nbytes + storage._counts.nbytes <= 1024


def test_storage_grows_with_the_history_not_with_max_length() -> None:
    buffer = HistoryBuffer()
    for n in (100, 1_000, 10_000, 50_000):
        while buffer.totals().updates < n:
            buffer.update(1.0)
        capacity = len(buffer.storage._values)
        assert n <= capacity <= 2 * n
        assert len(buffer.storage._counts) == capacity


def test_constructed_history_does_not_allocate_max_length() -> None:
    buffer = HistoryBuffer([1.0] * 10, [1.0] * 10)
    assert len(buffer.storage._values) <= 64
    state = pickle.loads(pickle.dumps(buffer))
    assert len(state.storage._values) <= 64


def test_ring_stops_growing_at_max_length_and_reuses_its_arrays() -> None:
    buffer = HistoryBuffer(max_length=100)
    seen = []
    for value in range(1_000):
        buffer.update(float(value))
        if not seen or seen[-1] is not buffer.storage._values:
            seen.append(buffer.storage._values)
    assert len(buffer.storage._values) == 100
    # 64 then 100: two allocations, none once the ring is full.
    assert len(seen) == 2
    assert buffer.data[0].tolist() == [float(v) for v in range(900, 1_000)]


@pytest.mark.parametrize("max_length", [63, 64, 65, 100, 127, 128, 129, 300])
def test_growing_then_wrapping_matches_the_model(max_length: int) -> None:
    buffer = HistoryBuffer(max_length=max_length)
    model = ListModel(max_length)
    windows = [None, 1, max_length - 1 or 1, max_length, max_length + 1, 2 * max_length]
    for step in range(3 * max_length + 7):
        value = float((step * 37) % 101 - 50)
        buffer.update(value, 1 + step % 3)
        model.update(value, float(1 + step % 3))
        if step % 29 == 0 or step in (63, 64, 127, 128, max_length - 1, max_length):
            check_against_model(buffer, model, windows, direct)
    check_against_model(buffer, model, windows, by_name)


def test_growth_reallocates_logarithmically_often() -> None:
    buffer = HistoryBuffer()
    arrays = set()
    kept = []
    for value in range(100_000):
        buffer.update(float(value))
        if id(buffer.storage._values) not in arrays:
            arrays.add(id(buffer.storage._values))
            kept.append(buffer.storage._values)  # keep alive so ids stay unique
    assert len(kept) <= math.ceil(math.log2(100_000 / 64)) + 1


def _cost_per_update(buffer: HistoryBuffer, n: int = 2_000, repeats: int = 5) -> float:
    best = math.inf
    for _ in range(repeats):
        probe = copy.deepcopy(buffer)
        update = probe.update
        start = time.perf_counter_ns()
        for _ in range(n):
            update(0.5)
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def test_update_cost_does_not_grow_with_the_history() -> None:
    # A copy-on-append history (np.append) is ~100x slower at 200k entries;
    # the bound leaves a wide margin for a noisy machine.
    empty = _cost_per_update(HistoryBuffer())
    full = HistoryBuffer(max_length=200_000)
    for _ in range(200_000):
        full.update(1.0)
    long = _cost_per_update(full)
    assert long < 3 * empty, (empty, long)


# -- special values ------------------------------------------------------------------


def test_nan_is_stored_and_propagates_like_numpy() -> None:
    buffer = HistoryBuffer(max_length=2)
    buffer.update(1.0)
    buffer.update(math.nan)
    assert math.isnan(buffer.current())
    assert math.isnan(buffer.data[0][-1])
    assert math.isnan(buffer.mean())
    assert math.isnan(buffer.min())
    assert math.isnan(buffer.max())
    assert buffer.min(1) != buffer.min(1)  # NaN
    buffer.update(3.0)
    buffer.update(4.0)
    # The NaN left the ring: windowed statistics are finite again ...
    assert buffer.min(2) == 3.0
    assert buffer.mean(2) == 3.5
    # ... but the whole run still contains it.
    assert math.isnan(buffer.min())
    assert math.isnan(buffer.max())
    assert math.isnan(buffer.mean())


def test_infinities_are_stored_as_given() -> None:
    buffer = HistoryBuffer()
    buffer.update(math.inf)
    buffer.update(1.0)
    assert buffer.max() == math.inf
    assert buffer.mean() == math.inf
    assert buffer.min() == 1.0
    buffer.update(-math.inf)
    assert buffer.min() == -math.inf
    assert buffer.current() == -math.inf
    assert math.isnan(buffer.mean())
    assert buffer.mean(1) == -math.inf


# -- copying -------------------------------------------------------------------------


def _wrapped_buffer() -> tuple[HistoryBuffer, list[float]]:
    buffer = HistoryBuffer(max_length=4)
    values = [3.0, -1.0, 7.5, 2.0, 0.5, 6.0, 1.0]
    for i, value in enumerate(values):
        buffer.update(value, i + 1)
    return buffer, values


@pytest.mark.parametrize(
    "clone",
    [lambda b: pickle.loads(pickle.dumps(b)), copy.deepcopy, copy.copy],
    ids=["pickle", "deepcopy", "copy"],
)
def test_copies_keep_history_and_totals(clone: Callable[[HistoryBuffer], HistoryBuffer]) -> None:
    original, values = _wrapped_buffer()
    restored = clone(original)
    assert restored is not original
    assert restored.max_length == 4
    assert restored.data[0].tolist() == original.data[0].tolist()
    assert restored.data[1].tolist() == original.data[1].tolist()
    assert restored.totals() == original.totals()
    assert restored.min() == min(values)
    assert restored.max() == max(values)
    assert restored.mean() == original.mean()
    # Both continue identically, and independently.
    for buffer in (original, restored):
        buffer.update(10.0, 2)
        buffer.update(-4.0, 1)
    assert restored.data[0].tolist() == original.data[0].tolist()
    assert restored.totals() == original.totals()
    restored.update(100.0)
    assert original.current() == -4.0
    assert original.totals().updates == len(values) + 2


def test_pickled_empty_buffer_stays_usable() -> None:
    restored = pickle.loads(pickle.dumps(HistoryBuffer(max_length=5)))
    assert restored.max_length == 5
    with pytest.raises(ValueError):
        restored.current()
    restored.update(2.0)
    assert restored.mean() == 2.0


def test_pickled_state_is_small_for_a_short_history() -> None:
    assert len(pickle.dumps(HistoryBuffer([1.0], [1.0]))) < 2_000


# -- property tests against the list model ----------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
values_strategy = st.one_of(
    st.integers(-(10**6), 10**6),
    finite,
    finite.map(np.float32),
    st.integers(-1000, 1000).map(np.int64),
    finite.map(lambda v: np.array([v])),
    finite.map(FakeTensor),
)
counts_strategy = st.one_of(st.integers(1, 16), st.floats(0.125, 16.0), st.just(np.int32(3)))
max_length_strategy = st.one_of(
    st.integers(1, 8), st.integers(9, 64), st.integers(65, 200), st.just(1_000_000)
)
window_strategy = st.one_of(st.none(), st.integers(1, 250))


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[Any, Any]]:
    """A run of updates: a first value of any accepted type, then a linear ramp.

    Runs make long histories likely (so rings wrap and grow) while hypothesis
    still shrinks a failure to a few short runs.
    """
    first = draw(values_strategy)
    count = draw(counts_strategy)
    step = draw(st.one_of(st.just(0.0), st.floats(-1e3, 1e3)))
    length = draw(st.integers(1, 40))
    start = plain(first)
    return [(first, count)] + [(start + step * i, count) for i in range(1, length)]


@settings(max_examples=150, deadline=None)
@given(
    max_length=max_length_strategy,
    updates=st.lists(runs(), max_size=10),
    windows=st.lists(window_strategy, min_size=1, max_size=4),
    call=st.sampled_from([direct, by_name, by_keyword]),
)
def test_matches_list_model(
    max_length: int,
    updates: list[list[tuple[Any, Any]]],
    windows: list[int | None],
    call: Callable[[HistoryBuffer, str, int | None], Any],
) -> None:
    buffer = HistoryBuffer(max_length=max_length)
    model = ListModel(max_length)
    check_against_model(buffer, model, windows, call)
    for run in updates:
        for value, count in run:
            buffer.update(value, count)
            model.update(plain(value), plain(count))
            assert buffer.current() == model.values[-1]
        check_against_model(buffer, model, windows, call)


@settings(max_examples=100, deadline=None)
@given(
    max_length=st.integers(1, 100),
    history=st.lists(st.tuples(finite, st.floats(0.5, 4.0)), max_size=150),
    updates=st.lists(st.tuples(finite, st.integers(1, 4)), max_size=100),
    window=window_strategy,
)
def test_constructor_history_matches_list_model(
    max_length: int,
    history: list[tuple[float, float]],
    updates: list[tuple[float, int]],
    window: int | None,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        buffer = HistoryBuffer([v for v, _ in history], [c for _, c in history], max_length)
    assert any("exceeds the max_length" in str(w.message) for w in caught) == (
        len(history) > max_length
    )
    # The constructor drops what does not fit: the model starts from what was kept.
    model = ListModel(max_length)
    for value, count in history[-max_length:]:
        model.update(value, count)
    for value, count in updates:
        buffer.update(value, count)
        model.update(float(value), float(count))
    check_against_model(buffer, model, [window, None], direct)


special = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=150, deadline=None)
@given(
    max_length=st.integers(1, 6),
    updates=st.lists(st.tuples(special, st.integers(1, 4)), min_size=1, max_size=40),
    window=window_strategy,
)
def test_nan_and_inf_match_numpy_over_the_model(
    max_length: int, updates: list[tuple[float, int]], window: int | None
) -> None:
    buffer = HistoryBuffer(max_length=max_length)
    model = ListModel(max_length)
    for value, count in updates:
        buffer.update(value, count)
        model.update(value, float(count))
    assert_same_float(buffer.current(), model.values[-1])
    values, _ = buffer.data
    assert [repr(v) for v in values.tolist()] == [repr(v) for v in model.data()[0]]
    used_values, used_counts = (np.array(x) for x in model.window(window))
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore")
        assert_same_float(buffer.min(window), used_values.min())
        assert_same_float(buffer.max(window), used_values.max())
        mean = buffer.mean(window)
        expected = used_values.sum() / used_counts.sum()
    if math.isfinite(expected):
        assert_mean_close(mean, used_values.tolist(), used_counts.tolist())
    else:
        # Which special value a sum ends in does not depend on the order.
        assert_same_float(mean, expected)


class HistoryBufferMachine(RuleBasedStateMachine):
    """Updates, copies and statistics interleaved; the model must always agree."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = HistoryBuffer()
        self.model = ListModel(1_000_000)

    @initialize(max_length=st.one_of(st.integers(1, 10), st.integers(11, 80)))
    def start(self, max_length: int) -> None:
        self.buffer = HistoryBuffer(max_length=max_length)
        self.model = ListModel(max_length)

    @rule(value=values_strategy, count=counts_strategy)
    def update(self, value: Any, count: Any) -> None:
        self.buffer.update(value, count)
        self.model.update(plain(value), plain(count))

    @rule(value=values_strategy, repeat=st.integers(1, 60))
    def update_many(self, value: Any, repeat: int) -> None:
        for _ in range(repeat):
            self.buffer.update(value)
            self.model.update(plain(value), 1.0)

    @rule(how=st.sampled_from(["pickle", "deepcopy"]))
    def copy(self, how: str) -> None:
        old = self.buffer
        if how == "pickle":
            self.buffer = pickle.loads(pickle.dumps(old))
        else:
            self.buffer = copy.deepcopy(old)
        self.model.warned = False  # a new object warns for itself
        old.update(123.0)  # the copy must not see this
        assert self.buffer.totals().updates == len(self.model.values)

    @precondition(lambda self: bool(self.model.values))
    @rule(window=window_strategy, call=st.sampled_from([direct, by_name, by_keyword]))
    def statistics(
        self, window: int | None, call: Callable[[HistoryBuffer, str, int | None], Any]
    ) -> None:
        check_against_model(self.buffer, self.model, [window], call)

    @invariant()
    def data_and_totals_agree(self) -> None:
        check_against_model(self.buffer, self.model, [], direct)


TestHistoryBufferMachine = HistoryBufferMachine.TestCase
TestHistoryBufferMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_per_writer_means_takes_the_window_and_the_rank_s_writers() -> None:
    from shmlog.stats.per_writer import per_writer_means

    def buffer_of(values: list[float]) -> HistoryBuffer:
        buffer = HistoryBuffer(max_length=4)
        for v in values:
            buffer.update(v)
        return buffer

    class Writers:
        def per_writer(self) -> dict[str, HistoryBuffer]:
            return {"rank1/worker0": buffer_of([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                    "rank0/worker0": buffer_of([10.0, 20.0]), "rank0": buffer_of([7.0]),
                    "rank0/worker1": HistoryBuffer()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a window past what a ring retains: no warning
        assert per_writer_means(Writers(), 2, rank=0) == {"rank0": 7.0, "rank0/worker0": 15.0}
        assert per_writer_means(Writers(), 2, rank=1) == {"rank1/worker0": 5.5}
        # 5 of 6 updates, 4 retained: the retained ones; every update: the running totals.
        assert per_writer_means(Writers(), 5) == {
            "rank0": 7.0, "rank0/worker0": 15.0, "rank1/worker0": 4.5}
        assert per_writer_means(Writers(), 6)["rank1/worker0"] == 3.5

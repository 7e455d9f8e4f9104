"""What a scalar, a count and a window may be, and what the refusal says.

Every value that reaches a history goes through ``shmlog.stats.values``; these
tests pin down which inputs are accepted (and become exactly which float) and
that each refusal names the key, the value and what would have been accepted.
"""

from __future__ import annotations

import enum
import fractions
import math
from typing import Any

import numpy as np
import pytest

from shmlog.stats.values import ACCEPTED, check_window, to_count, to_float


class FakeTensor:
    """Just enough of a tensor for the duck typing: ``numel``, ``item``, ``shape``."""

    def __init__(self, *values: Any) -> None:
        self._values = list(values)
        self.shape = (len(values),)

    def numel(self) -> int:
        return len(self._values)

    def item(self) -> Any:
        if len(self._values) != 1:
            raise RuntimeError("a tensor with several elements has no item()")
        return self._values[0]

    def __repr__(self) -> str:
        return f"FakeTensor({', '.join(map(repr, self._values))})"


class Level(enum.IntEnum):
    HIGH = 3


# -- accepted values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (3, 3.0),
        (-7, -7.0),
        (2**60, float(2**60)),
        (0.25, 0.25),
        (-1e300, -1e300),
        (np.float64(1.5), 1.5),
        (np.float32(0.1), float(np.float32(0.1))),
        (np.float16(2.5), 2.5),
        (np.int8(-4), -4.0),
        (np.int64(123456789), 123456789.0),
        (np.uint64(2**63), float(2**63)),
        (np.array(2.5), 2.5),
        (np.array([4]), 4.0),
        (np.array([[0.75]], dtype=np.float32), 0.75),
        (np.array([7], dtype=np.uint8), 7.0),
        (FakeTensor(0.5), 0.5),
        (FakeTensor(9), 9.0),
        (FakeTensor(np.float32(1.25)), 1.25),
        (fractions.Fraction(1, 4), 0.25),
        (Level.HIGH, 3.0),
    ],
    ids=repr,
)
def test_accepted_values_become_plain_floats(value: Any, expected: float) -> None:
    result = to_float(value)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "wrap", [float, np.float64, np.float32, np.array, FakeTensor], ids=lambda w: w.__name__
)
def test_nan_and_inf_are_stored_as_given(special: float, wrap: Any) -> None:
    result = to_float(wrap(special))
    if math.isnan(special):
        assert math.isnan(result)
    else:
        assert result == special


def test_float_input_is_returned_unchanged() -> None:
    value = 0.1 + 0.2
    assert to_float(value) is value


# -- refused values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "mentions"),
    [
        (True, TypeError, "True"),
        (False, TypeError, "False"),
        (np.bool_(True), TypeError, "True"),
        ("1.0", TypeError, "'1.0'"),
        (None, TypeError, "None"),
        ([1.0], TypeError, "[1.0]"),
        ((1.0,), TypeError, "(1.0,)"),
        ({"value": 1.0}, TypeError, "{'value': 1.0}"),
        (1 + 2j, TypeError, "(1+2j)"),
        (np.complex128(1 + 1j), TypeError, "1j"),
        (object(), TypeError, "object"),
        (np.array([1.0, 2.0]), ValueError, "array([1., 2.])"),
        (np.array([]), ValueError, "array([]"),
        (np.zeros((2, 2)), ValueError, "(2, 2)"),
        (np.array([True]), TypeError, "bool"),
        (np.array(["x"]), TypeError, "'x'"),
        (np.array([1 + 1j]), TypeError, "complex"),
        (FakeTensor(1.0, 2.0, 3.0), ValueError, "FakeTensor(1.0, 2.0, 3.0)"),
        (FakeTensor(), ValueError, "FakeTensor()"),
        (FakeTensor(True), TypeError, "True"),
        (FakeTensor("a"), TypeError, "'a'"),
        (10**400, ValueError, "1000000"),
    ],
    ids=repr,
)
def test_refused_values_name_value_key_and_expectation(
    value: Any, error: type[Exception], mentions: str
) -> None:
    with pytest.raises(error) as caught:
        to_float(value, "train/loss")
    message = str(caught.value)
    assert "'train/loss'" in message
    assert mentions in message
    # An int beyond float64's range says so instead of listing the accepted types.
    assert ACCEPTED in message or "too large to store as a float64" in message


def test_refusal_without_key_still_names_what_was_refused() -> None:
    with pytest.raises(TypeError, match=r"value: expected .* got str 'abc'"):
        to_float("abc")


def test_refusal_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^'lr' count: "):
        to_float(None, "lr", "count")


def test_long_reprs_are_shortened() -> None:
    with pytest.raises(TypeError) as caught:
        to_float("x" * 500, "k")
    message = str(caught.value)
    assert "xxx..." in message
    assert len(message) < 300


def test_object_with_item_but_no_numel_is_refused() -> None:
    class OnlyItem:
        def item(self) -> float:
            return 1.0

    with pytest.raises(TypeError, match="OnlyItem"):
        to_float(OnlyItem())


# -- counts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, 0.0), (1, 1.0), (8, 8.0), (2.5, 2.5), (np.int32(4), 4.0), (FakeTensor(3), 3.0)],
    ids=repr,
)
def test_accepted_counts(count: Any, expected: float) -> None:
    result = to_count(count)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize(
    ("count", "error", "mentions"),
    [
        (-1, ValueError, "-1"),
        (-0.5, ValueError, "-0.5"),
        (math.nan, ValueError, "nan"),
        (math.inf, ValueError, "inf"),
        (-math.inf, ValueError, "-inf"),
        (np.float64("nan"), ValueError, "nan"),
        (True, TypeError, "True"),
        ("2", TypeError, "'2'"),
        (None, TypeError, "None"),
        (np.array([1, 2]), ValueError, "array([1, 2])"),
    ],
    ids=repr,
)
def test_refused_counts_name_key_and_value(
    count: Any, error: type[Exception], mentions: str
) -> None:
    with pytest.raises(error) as caught:
        to_count(count, "train/acc")
    message = str(caught.value)
    assert "'train/acc' count" in message
    assert mentions in message
    assert "expected" in message


# -- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "expected"),
    [(None, None), (1, 1), (50, 50), (np.int64(3), 3), (10**12, 10**12)],
    ids=repr,
)
def test_accepted_windows(window: Any, expected: Any) -> None:
    result = check_window(window)
    assert result == expected
    if expected is not None:
        assert type(result) is int


@pytest.mark.parametrize(
    ("window", "error"),
    [
        (0, ValueError),
        (-3, ValueError),
        (np.int64(0), ValueError),
        (1.0, TypeError),
        (2.5, TypeError),
        ("3", TypeError),
        (True, TypeError),
        (np.bool_(True), TypeError),
        ([3], TypeError),
    ],
    ids=repr,
)
def test_refused_windows(window: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"'loss' window_size: expected None or an int >= 1"):
        check_window(window, "loss")

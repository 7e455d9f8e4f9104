"""Turning user-supplied numbers into floats, with errors that say what went wrong.

Every scalar that reaches a history goes through :func:`to_float`, so an
unsupported value is refused before anything is stored, and the message names
the key, the value and what would have been accepted.  Torch is never
imported: a tensor is recognised by its ``numel``/``item`` methods.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..errors import InvalidType, InvalidValue, NotAScalar

ACCEPTED = "an int, float, numpy scalar, size-1 numpy array or 1-element tensor"


def _where(key: str | None, what: str) -> str:
    return f"{key!r} {what}" if key is not None else what


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def to_float(value: Any, key: str | None = None, what: str = "value") -> float:
    """Return ``value`` as a Python float or raise TypeError/ValueError.

    The exceptions are also AssertionErrors (``shmlog.errors``); an array or
    tensor of more than one element raises NotAScalar, a TypeError and a
    ValueError.

    ``key`` and ``what`` only shape the message ("'train/loss' value: ...").
    NaN and infinities are returned unchanged: a diverging loss is data.
    """
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return _int_to_float(value, key, what)
    if isinstance(value, (bool, np.bool_)):
        raise InvalidType(
            f"{_where(key, what)}: expected {ACCEPTED}, got bool {value!r}"
        )
    if isinstance(value, numbers.Real):  # int/float subclasses, numpy scalars
        if isinstance(value, numbers.Integral):
            return _int_to_float(int(value), key, what)
        return float(value)
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise NotAScalar(
                f"{_where(key, what)}: expected {ACCEPTED}, got an array of shape "
                f"{value.shape} ({value.size} elements): {_short(value)}"
            )
        if value.dtype.kind not in "iuf":
            raise InvalidType(
                f"{_where(key, what)}: expected {ACCEPTED}, got an array of dtype "
                f"{value.dtype}: {_short(value)}"
            )
        return float(value.reshape(-1)[0])
    numel = getattr(value, "numel", None)
    item = getattr(value, "item", None)
    if callable(numel) and callable(item):
        n = numel()
        if n != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise NotAScalar(
                f"{_where(key, what)}: expected {ACCEPTED}, got a tensor of shape "
                f"{shape} ({n} elements): {_short(value)}"
            )
        inner = item()
        if isinstance(inner, (bool, np.bool_)) or not isinstance(inner, numbers.Real):
            raise InvalidType(
                f"{_where(key, what)}: expected {ACCEPTED}, got a tensor holding "
                f"{_short(inner)}"
            )
        return float(inner)
    raise InvalidType(
        f"{_where(key, what)}: expected {ACCEPTED}, got {kind.__name__} {_short(value)}"
    )


def _int_to_float(value: int, key: str | None, what: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise InvalidValue(
            f"{_where(key, what)}: {value} is too large to store as a float64"
        ) from None


def to_count(count: Any, key: str | None = None) -> float:
    """Validate a count: a finite, non-negative number."""
    result = to_float(count, key, "count")
    if not math.isfinite(result) or result < 0:
        raise InvalidValue(
            f"{_where(key, 'count')}: expected a finite number >= 0, got {_short(count)}"
        )
    return result


def check_window(window_size: Any, key: str | None = None) -> int | None:
    """Validate a statistics window: None (global) or an int >= 1."""
    if window_size is None:
        return None
    if isinstance(window_size, (bool, np.bool_)) or not isinstance(
        window_size, numbers.Integral
    ):
        raise InvalidType(
            f"{_where(key, 'window_size')}: expected None or an int >= 1, got "
            f"{type(window_size).__name__} {_short(window_size)}"
        )
    window = int(window_size)
    if window < 1:
        raise InvalidValue(
            f"{_where(key, 'window_size')}: expected None or an int >= 1, got {window}"
        )
    return window

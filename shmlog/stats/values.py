"""Checking user-supplied keys and numbers, with errors that say what went wrong.

Every scalar that reaches a history goes through :func:`to_float`, so an
unsupported value is refused before anything is stored, and the message names
the key, the value and what would have been accepted.  Torch is never
imported: a tensor is recognised by its ``numel``/``item`` methods.

Every MessageHub key goes through :func:`check_key`, in a session or not, so
a key is refused the same way in both: a session stores ``hub name + "\\x1f"
+ key`` in at most :data:`KEY_MAX_BYTES` bytes of UTF-8 (``shmlog.wire``,
``shmlog.shm.scalar_rings``), and a hub name or key holding the separator would let
two hubs share one name.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..errors import InvalidType, InvalidValue, NotAScalar
from ..shm.names import KEY_MAX_BYTES
from ..wire import SEPARATOR

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
        if getattr(value, "is_meta", False) is True:
            raise InvalidValue(
                f"{_where(key, what)}: expected {ACCEPTED}, got a tensor on the meta "
                f"device, which has no data: {_short(value)}"
            )
        n = numel()
        if n != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise NotAScalar(
                f"{_where(key, what)}: expected {ACCEPTED}, got a tensor of shape "
                f"{shape} ({n} elements): {_short(value)}"
            )
        try:
            inner = item()
        except Exception as exc:  # a tensor of any library: whatever it raises
            raise InvalidValue(
                f"{_where(key, what)}: expected {ACCEPTED}; {_short(value)} has no "
                f"readable value ({type(exc).__name__}: {_short(str(exc))})"
            ) from exc
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


def short_key(key: Any) -> str:
    """``repr(key)``, shortened to what fits in a message."""
    text = repr(key)
    if len(text) <= 60:
        return text
    size = f" ({len(key)} characters)" if isinstance(key, str) else ""
    return f"{text[:45]}...{text[-8:]}{size}"


def check_hub_name(name: Any) -> str:
    """``name`` if it can name a MessageHub, else TypeError/ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidType(f"MessageHub name: expected a non-empty str, got {short_key(name)}")
    if SEPARATOR in name:
        raise InvalidValue(
            f"MessageHub name {short_key(name)}: contains {SEPARATOR!r}, the separator "
            f"shmlog puts between hub names and keys; expected a name without it"
        )
    size = _utf8_bytes(name, "MessageHub name")
    if size + len(SEPARATOR) >= KEY_MAX_BYTES:
        raise InvalidValue(
            f"MessageHub name {short_key(name)}: takes {size} bytes in UTF-8, which leaves "
            f"no room for keys; hub name, separator and key take at most {KEY_MAX_BYTES} "
            f"bytes together"
        )
    return name


def check_key(key: Any, hub: str) -> str:
    """``key`` if MessageHub ``hub`` can store it (see the module docstring), else raise.

    TypeError for a key that is not a str, ValueError for one holding the
    separator or too long for ``hub``; the message names the hub and the key
    (shortened) and says what was expected.
    """
    if not isinstance(key, str):
        raise InvalidType(
            f"MessageHub {hub!r} key {short_key(key)}: expected a str, got "
            f"{type(key).__name__}"
        )
    if SEPARATOR in key:
        raise InvalidValue(
            f"MessageHub {hub!r} key {short_key(key)}: contains {SEPARATOR!r}, the "
            f"separator shmlog puts between hub names and keys; expected a key without it"
        )
    size = _utf8_bytes(key, f"MessageHub {hub!r} key")
    room = KEY_MAX_BYTES - len(SEPARATOR) - len(hub.encode("utf-8"))
    if size > room:
        raise InvalidValue(
            f"MessageHub {hub!r} key {short_key(key)}: takes {size} bytes in UTF-8; "
            f"expected at most {room} ({KEY_MAX_BYTES} bytes for the hub name, the "
            f"separator and the key together)"
        )
    return key


def _utf8_bytes(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidValue(
            f"{what} {short_key(text)}: cannot be encoded as UTF-8 ({exc.reason} at "
            f"position {exc.start}); expected text without lone surrogates"
        ) from None

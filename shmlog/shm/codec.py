"""Runtime info values as bytes that any process of the session can read.

Only plain data crosses processes: None, bool, int, float, str, bytes,
lists/tuples/dicts of those, and numpy arrays and scalars of numeric or bool
dtype.  Anything else is refused when it is stored, with the key in the
message, rather than failing later in a reader.  Values are pickled after
that check and unpickled with a loader that only resolves numpy's array and
dtype constructors, so a segment's bytes can never name other code to run.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

MAX_INFO_BYTES = 1 << 20

_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "complex"),
}
ACCEPTED_INFO = (
    "None, bool, int, float, str, bytes, lists/tuples/dicts of those, or a numeric numpy "
    "array or scalar"
)


def _check(value: Any, key: str, path: str, depth: int) -> None:
    if depth > 32:
        raise TypeError(f"runtime info {key!r}: nested deeper than 32 levels at {path}")
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind not in "biufc":
            raise TypeError(
                f"runtime info {key!r}{path}: numpy dtype {value.dtype} cannot be shared; "
                f"expected {ACCEPTED_INFO}"
            )
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, key, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            _check(k, key, f"{path} (a dict key)", depth + 1)
            _check(item, key, f"{path}[{k!r}]", depth + 1)
        return
    raise TypeError(
        f"runtime info {key!r}{path}: a {type(value).__name__} cannot be shared between "
        f"processes; expected {ACCEPTED_INFO}"
    )


def encode(key: str, value: Any) -> bytes:
    """Check ``value`` and return its bytes; TypeError/ValueError name the key."""
    _check(value, key, "", 0)
    if isinstance(value, (list, tuple, dict)):
        # Subclasses (OrderedDict, namedtuple) are stored as their plain base.
        value = _plain(value)
    raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(raw) > MAX_INFO_BYTES:
        raise ValueError(
            f"runtime info {key!r} takes {len(raw)} bytes; shared runtime info values are "
            f"limited to {MAX_INFO_BYTES} bytes each"
        )
    try:
        decode(raw)
    except pickle.UnpicklingError as exc:
        # A subclass of an accepted type (an IntEnum, a str subclass,
        # numpy.matrix) passes the check above but pickles as a reference to
        # its class, which no reader loads: refuse it here, not in every reader.
        raise TypeError(f"runtime info {key!r}: {exc}; expected {ACCEPTED_INFO}") from None
    return raw


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Loader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"runtime info refers to {module}.{name}, which is not data")


def decode(raw: bytes) -> Any:
    return _Loader(io.BytesIO(raw)).load()

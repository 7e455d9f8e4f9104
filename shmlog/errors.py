"""The exceptions shmlog raises for bad input.

Each names the key or argument, the value and what was expected, and is a
subclass of the built-in exception a Python programmer would catch
(TypeError, ValueError, KeyError) *and* of AssertionError: MMEngine checks
the same input with ``assert``, so code written for MMEngine (its own tests
included) catches AssertionError, and it keeps working with shmlog.

This module imports nothing: every layer may raise these.
"""

from __future__ import annotations

__all__ = ["InvalidKey", "InvalidType", "InvalidValue", "NotAScalar"]


class InvalidType(TypeError, AssertionError):
    """An argument of the wrong type."""


class InvalidValue(ValueError, AssertionError):
    """An argument of the right type with a value that is not accepted."""


class InvalidKey(KeyError, AssertionError):
    """A dict argument that lacks an entry it needs."""

    def __str__(self) -> str:
        # KeyError shows its argument's repr; this one is a sentence.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class NotAScalar(TypeError, ValueError, AssertionError):
    """An array or tensor with other than one element where one number is expected.

    A TypeError for MMEngine's ``HistoryBuffer.update`` (which takes only
    numbers), a ValueError for shmlog's earlier releases (the type is
    accepted, its size is not).
    """

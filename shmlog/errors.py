"""Every exception shmlog defines, all exported from ``shmlog``.

Bad input (``InvalidType``, ``InvalidValue``, ``InvalidKey``, ``NotAScalar``):
each names the key or argument, the value and what was expected, and is a
subclass of the built-in exception a Python programmer would catch
(TypeError, ValueError, KeyError) *and* of AssertionError: MMEngine checks
the same input with ``assert``, so code written for MMEngine (its own tests
included) catches AssertionError, and it keeps working with shmlog.

Shared memory and sessions (``SessionError``, ``SegmentError`` and its
subclasses), log files (``LogPathError``) and optional extras that are not
installed (``MetricsUnavailable``, ``PlotError``): each is a subclass of the
built-in exception that describes it (RuntimeError, MemoryError, OSError,
ImportError).

This module imports nothing: every layer may raise these.
"""

from __future__ import annotations

__all__ = [
    "DescriptorLimitError",
    "InvalidKey",
    "InvalidType",
    "InvalidValue",
    "JobConflict",
    "LogPathError",
    "MetricsUnavailable",
    "NotAScalar",
    "PlotError",
    "SegmentError",
    "SegmentNotReady",
    "SessionError",
    "SessionGone",
    "ShmFullError",
]


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


class SessionError(RuntimeError):
    """A session could not be opened, or was used after it closed."""


class JobConflict(SessionError):
    """Another live job holds the session name asked for."""


class SegmentError(RuntimeError):
    """A segment could not be created or is not one shmlog can use."""


class ShmFullError(SegmentError, MemoryError):
    """/dev/shm has no room for a new segment."""


class DescriptorLimitError(SegmentError):
    """This process may not open another file descriptor (RLIMIT_NOFILE)."""


class SegmentNotReady(SegmentError):
    """The segment exists but its creator has not written its header yet."""


class LogPathError(OSError):
    """A log file or directory shmlog refuses to open: a link someone else could have put there."""


class MetricsUnavailable(ImportError):
    """prometheus_client is not installed (the ``metrics`` extra)."""


class PlotError(RuntimeError):
    """No scalars to plot, or no matplotlib to plot them with."""


class SessionGone(Exception):
    """The watched session was closed, or every process that joined it exited."""

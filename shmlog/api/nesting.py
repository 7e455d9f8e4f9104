"""Nested ``shmlog.init``: a second handle on the session this process is in.

A library that opens the session its caller already opened (``with
shmlog.init('exp'):`` inside the user's own) gets a handle of its own.  Each
handle closes once (closing again does nothing), and the process leaves the
session when every handle is closed, in whatever order: a helper's ``with``
block never ends the caller's session.  Everything else a handle does is the
session's.
"""

from __future__ import annotations

from typing import Any


class NestedSession:
    """A handle that a nested ``init`` returned; see the module docstring."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._released = False

    @property
    def closed(self) -> bool:
        """Whether this handle is closed (the session may still be open)."""
        return self._released or self._session.closed

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        self._session.release_handle()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __enter__(self) -> NestedSession:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<shmlog.Session {self.name!r} {state} nested handle>"

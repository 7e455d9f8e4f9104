"""The switch between in-process hubs and hubs shared through a session.

MessageHub asks :func:`shared_hub` on every call.  Outside a session the answer
is None and costs one global read; inside one it is the session's view of the
named hub.  The session module installs itself here when a process attaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Set by shmlog.session when this process attaches to a session; returns the
# shared hub object for a hub name.
_resolver: Callable[[str], Any] | None = None
# A new object whenever the resolver changes (None outside sessions): hubs
# compare it by identity to know that a binding they cached is still valid.
token: object | None = None


def shared_hub(name: str) -> Any:
    resolver = _resolver
    if resolver is None:
        return None
    return resolver(name)


def install(resolver: Callable[[str], Any] | None) -> None:
    global _resolver, token
    _resolver = resolver
    token = None if resolver is None else object()

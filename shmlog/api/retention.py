"""A run stays readable: hubs carry their history into a session and out of it.

Inside a session a MessageHub reads and writes shared memory; outside, its
own dicts.  Two moments connect them, both for the MessageHubs of a member
process (the one that called ``shmlog.init``):

* joining: what a hub held before ``init`` (values logged at import time, a
  state dict loaded early) becomes part of the session's history, in this
  process's own rings, so every process sees it;
* leaving: each hub gets back what the session held for it as this process
  reads it (its rank's writers, or every writer outside distributed
  training): the retained history of every key with its exact totals, and
  the runtime info.  ``get_scalar``, ``state_dict()`` and final summaries
  after the ``with`` block see the run.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Any

from ..errors import SessionError
from .message_hub import MessageHub

# hub -> what it got from the last session it left: {key: (buffer, totals)}
# and {key: value}.  That is the earlier session's, not this process's to
# bring into the next one (other processes' values among it): only what was
# logged since goes in.
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def carry_in(session: Any) -> None:
    """Move what this process's hubs hold into ``session`` (see the module docstring)."""
    for hub in list(MessageHub.instances().values()):
        scalars, info = hub.kept_here()
        if not scalars and not info:
            continue
        kept_scalars, kept_info = _KEPT.pop(hub, ({}, {}))
        shared = session.hub(hub.instance_name)
        for key, buffer in list(scalars.items()):
            kept = kept_scalars.get(key)
            if kept is not None and kept[0] is buffer and tuple(buffer.totals()) == kept[1]:
                continue  # as the last session left it
            try:
                shared.load_scalar(key, buffer)
            except ValueError:
                warnings.warn(
                    f"MessageHub {hub.instance_name!r}: {key!r} logged before shmlog.init "
                    f"could not join the session's history (this process already logged it "
                    f"there); its {len(buffer)} retained values stay out of the session",
                    stacklevel=3,
                )
        for key, value in list(info.items()):
            if key in kept_info and kept_info[key] is value:
                continue
            if shared.get_info(key, _MISSING) is _MISSING:
                shared.update_info(key, value)


def carry_out(session: Any) -> None:
    """Copy what ``session`` holds for each hub of this process into the hub.

    Leaving goes on whatever this meets: it only warns.
    """
    try:
        _carry_out(session)
    except (SessionError, ValueError, OSError) as exc:
        warnings.warn(
            f"shmlog session {session.name!r}: the hubs could not keep the session's "
            f"history after close ({exc})",
            stacklevel=4,
        )


def _carry_out(session: Any) -> None:
    for hub in list(MessageHub.instances().values()):
        shared = session.hub(hub.instance_name)
        # Copies own their records (and keep the key as their name).
        scalars = {key: copy.deepcopy(buffer) for key, buffer in shared.log_scalars().items()}
        info = shared.runtime_info()
        local_scalars, local_info = hub.kept_here()
        local_scalars.clear()
        local_scalars.update(scalars)
        local_info.clear()
        local_info.update(info)
        _KEPT[hub] = ({key: (b, tuple(b.totals())) for key, b in scalars.items()}, dict(info))


class _Missing:
    pass


_MISSING = _Missing()

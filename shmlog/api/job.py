"""Which job a process belongs to, and whether it may join a session by name.

A session is one job's: the ranks of one launch, their DataLoader workers
and other children, and processes that say explicitly that they join.  The
creator stores its job (an identity string, its pid and command line) in the
session's options; a later ``init`` of the same name joins only when

* it is of the same job: the same torchrun launch (the ranks' common agent
  process), the same SLURM job step, children of one multiprocessing parent
  (``mp.spawn``), or the same ``SHMLOG_JOB`` value;
* it was started inside the session (``SHMLOG_SESSION`` names it: a child of
  a member, whatever started it);
* it asks to (``shmlog.init(name, join=True)``: ranks started by hand);
* or no live process holds the session any more (it replaces or adopts it).

Anything else is another job asking for a name in use, and gets
:class:`JobConflict` naming the holder.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from ..errors import JobConflict, SessionError
from ..shm.liveness import process_start

ENV_JOB = "SHMLOG_JOB"
_CMDLINE_CHARS = 200


def job_id() -> str:
    """This process's job, the same string in every process of one launch."""
    explicit = os.environ.get(ENV_JOB, "").strip()
    if explicit:
        return f"env:{explicit}"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        # torchrun's agent starts every local rank of a launch (and restarts
        # them under a new restart count).
        agent = os.getppid()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return f"torchrun:{agent}:{process_start(agent) or 0}:{restart}"
    slurm_job, slurm_step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if slurm_job and slurm_step:
        return f"slurm:{slurm_job}.{slurm_step}"
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid:
        return f"mp:{parent.pid}:{process_start(parent.pid) or 0}"
    pid = os.getpid()
    return f"pid:{pid}:{process_start(pid) or 0}"


def command_line(pid: int) -> str:
    """``pid``'s command line, shortened; '?' when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    if len(text) > _CMDLINE_CHARS:
        text = text[: _CMDLINE_CHARS - 3] + "..."
    return text or "?"


def this_job() -> dict[str, Any]:
    """What the creator of a session stores about its job."""
    pid = os.getpid()
    return {"id": job_id(), "pid": pid, "cmdline": command_line(pid)}


def admit(segments: Any, stored: dict[str, Any] | None, inherited: str | None,
          join: bool) -> None:
    """Check that this process, just joined to ``segments``, may stay; leave if not."""
    me = os.getpid()
    others = [pid for _, pid, _ in segments.control.live_members() if pid != me]
    try:
        check_join(segments.name, stored, others, inherited, join)
    except SessionError:
        segments.close()
        raise


def check_join(name: str, stored: dict[str, Any] | None, members: list[int],
               inherited: str | None, join: bool) -> None:
    """Raise :class:`JobConflict` unless this process may join session ``name``.

    ``stored``: the job the creator recorded (None: a session made before
    jobs were recorded); ``members``: pids of the live members other than
    this process; ``inherited``: ``SHMLOG_SESSION`` as this process found it.
    """
    if join or inherited == name or not members or stored is None:
        return
    if stored.get("id") == job_id():
        return
    pid = stored.get("pid", 0)
    holder = members[0] if pid not in members else pid
    cmdline = stored.get("cmdline", "?") if holder == pid else command_line(holder)
    raise JobConflict(
        f"shmlog session {name!r} is in use by another job: pid {holder} ({cmdline}), "
        f"{len(members)} live process(es) in it.  Use another name (shmlog.init() with "
        f"no name picks one unique to this run), wait for that job to end, or, if this "
        f"process belongs to that job (a rank started by hand), join it explicitly with "
        f"shmlog.init({name!r}, join=True) or the same {ENV_JOB} in every process of the job"
    )

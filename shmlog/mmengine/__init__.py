"""shmlog for MMEngine's Runner, enabled by config alone.

In an MMEngine config::

    custom_imports = dict(imports=['shmlog.mmengine'], allow_failed_imports=False)
    custom_hooks = [dict(type='ShmlogHook')]

Importing this module registers, in MMEngine's registries:

* ``HOOKS``: ``ShmlogHook`` (``shmlog.mmengine.hook``);
* ``FUNCTIONS``: ``shmlog_worker_init_fn``, for
  ``worker_init_fn=dict(type='shmlog_worker_init_fn')`` in a dataloader
  config (MMEngine's seeding, then shmlog's worker side;
  ``shmlog.mmengine.workers``);
* ``LOG_PROCESSORS``: ``ShmlogLogProcessor``, shmlog's LogProcessor
  (``log_processor=dict(type='ShmlogLogProcessor', ...)``; the dotted
  ``type='shmlog.LogProcessor'`` names the same class).

It needs MMEngine (``pip install 'shmlog[mmengine]'``); nothing else in
shmlog imports it.  See docs/mmengine.md.
"""

from __future__ import annotations

try:
    from mmengine.registry import FUNCTIONS, HOOKS, LOG_PROCESSORS
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        f"shmlog.mmengine needs MMEngine (pip install 'shmlog[mmengine]'): {exc}"
    ) from exc

from ..format.log_processor import LogProcessor
from .hook import ShmlogHook, session_name, worker_values
from .hub import SharedInfo, SharedScalars, is_shared, share, unshare
from .workers import RunnerWorker, shmlog_worker_init_fn, track_runner_loaders

HOOKS.register_module(name="ShmlogHook", module=ShmlogHook, force=True)
FUNCTIONS.register_module(name="shmlog_worker_init_fn", module=shmlog_worker_init_fn, force=True)
LOG_PROCESSORS.register_module(name="ShmlogLogProcessor", module=LogProcessor, force=True)

__all__ = [
    "RunnerWorker",
    "SharedInfo",
    "SharedScalars",
    "ShmlogHook",
    "is_shared",
    "session_name",
    "share",
    "shmlog_worker_init_fn",
    "track_runner_loaders",
    "unshare",
    "worker_values",
]

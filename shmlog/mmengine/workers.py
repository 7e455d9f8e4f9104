"""DataLoader workers of an MMEngine Runner, in the session.

Two things happen in each worker, before anything else runs there:

* the worker's MMEngine ``MessageHub.get_current_instance()`` is the Runner's
  hub, stored in the session (:class:`RunnerWorker`): what a dataset's
  ``__getitem__``, a transform or a collate function updates there reaches
  the Runner's hub of the worker's rank.  A forked worker inherits the
  shared hub; a spawned one gets a hub of the same name, shared the same way;
* the worker times every batch it builds, as ``<mode>/worker_data_time``
  (``shmlog.track_data_time``).

:func:`track_runner_loaders` arranges both for the Runner's loaders around
whatever ``worker_init_fn`` they have (MMEngine's seeding by default), which
still runs, after them.  :func:`shmlog_worker_init_fn` is a function for a
dataloader config (``worker_init_fn=dict(type='shmlog_worker_init_fn')``)
for loaders the hook does not see: it seeds the worker as MMEngine's default
would, then does the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.dataloader import WorkerInit, track_data_time
from ..api.fetch_timer import Recorder, in_dataloader_worker, install_fetch_timer
from ..api.process import PROCESS, identity
from ..errors import InvalidValue
from ..format.checks import MODES
from .hub import share

_LOOPS = (("train", "_train_loop"), ("val", "_val_loop"), ("test", "_test_loop"))


class RunnerWorker:
    """A worker_init_fn part: the Runner's hub is the worker's current MMEngine hub.

    Then ``then(worker_id)`` runs (the loader's own ``worker_init_fn``).
    Pickles (for spawn and forkserver workers) when ``then`` does.
    """

    def __init__(self, hub: str, then: Callable[[int], Any] | None = None) -> None:
        self.hub = hub
        self.then = then

    def __call__(self, worker_id: int) -> None:
        use_runner_hub(self.hub)
        if self.then is not None:
            self.then(worker_id)

    def __repr__(self) -> str:
        return f"RunnerWorker(hub={self.hub!r}, then={self.then!r})"


def use_runner_hub(name: str) -> Any:
    """Make MMEngine's hub ``name`` this process's current one, stored in the session if open."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance(name)
    if PROCESS.shared_hub(name) is not None:
        share(hub)
    # get_current_instance() is the most recently created hub: this one, here.
    MessageHub._instance_dict.move_to_end(name)
    return hub


def track_runner_loaders(runner: Any, hub: str) -> list[str]:
    """Arrange the workers of the Runner's built loaders (see the module docstring).

    Loops still given as config dicts are left alone (reading ``train_loop``
    would build one).  Returns the modes whose loaders are tracked.
    """
    from torch.utils.data import DataLoader

    tracked = []
    for mode, attr in _LOOPS:
        loop = getattr(runner, attr, None)
        loader = getattr(loop, "dataloader", None) if not isinstance(loop, dict) else None
        if not isinstance(loader, DataLoader):
            continue
        current = loader.worker_init_fn
        if not isinstance(current, WorkerInit):
            loader.worker_init_fn = RunnerWorker(hub, current)
        track_data_time(loader, mode=mode, hub=hub)
        tracked.append(mode)
    return tracked


def shmlog_worker_init_fn(
    worker_id: int,
    num_workers: int | None = None,
    rank: int | None = None,
    seed: int | None = None,
    disable_subprocess_warning: bool = False,
    mode: str = "train",
    hub: str | None = None,
) -> None:
    """A DataLoader ``worker_init_fn`` for MMEngine configs: MMEngine's seeding, then shmlog's.

    Seeds ``random``, numpy and torch with ``num_workers * rank + worker_id +
    seed`` by calling ``mmengine.dataset.worker_init_fn``, as the Runner does
    for loaders without a ``worker_init_fn`` of their own.  What the config
    leaves out is found at run time: ``num_workers`` from torch's worker info,
    ``rank`` by shmlog's identity rule, ``seed`` from the hub's ``seed`` info
    (the Runner's, stored by RuntimeInfoHook); without a seed anywhere the
    worker keeps torch's own.  Then the worker times its batches into
    ``<mode>/worker_data_time`` of MMEngine hub ``hub`` (default: the
    worker's current one, the Runner's), which becomes its current hub.
    """
    import torch
    from mmengine.dataset import worker_init_fn as mmengine_seeding
    from mmengine.logging import MessageHub

    if mode not in MODES:
        raise InvalidValue(f"mode: expected one of {list(MODES)}, got {mode!r}")
    name = hub if hub is not None else MessageHub.get_current_instance().instance_name
    runner_hub = use_runner_hub(name)
    info = torch.utils.data.get_worker_info()
    if num_workers is None:
        num_workers = info.num_workers if info is not None else 1
    if rank is None:
        rank = identity().rank
    if seed is None:
        seed = runner_hub.get_info("seed")
    if seed is not None:
        mmengine_seeding(worker_id, num_workers, rank, int(seed), disable_subprocess_warning)
    elif disable_subprocess_warning and worker_id != 0:
        import warnings

        warnings.simplefilter("ignore")
    session = PROCESS.current()
    if session is not None:
        session.shared.thread_slot()  # labelled as this worker before anything is logged
    if in_dataloader_worker():
        install_fetch_timer(Recorder(f"{mode}/worker_data_time", name))

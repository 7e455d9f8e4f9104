"""Datasets, collate functions and worker_init_fns for tests/test_dataloader.py.

They live at module top level because spawn and forkserver DataLoader workers
unpickle them by module name (``_dataloader_data``), which needs ``tests/``
on the workers' ``sys.path``; the tests also put it in ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate


class Squares(Dataset):
    """``i -> float(i * i)``, sleeping ``delay`` seconds per item."""

    def __init__(self, size: int, delay: float = 0.0) -> None:
        self.size = size
        self.delay = delay

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> float:
        if self.delay:
            time.sleep(self.delay)
        return float(index * index)


class Stream(IterableDataset):
    """``0 .. size-1``, split between workers by worker id (each item once)."""

    def __init__(self, size: int, delay: float = 0.0) -> None:
        self.size = size
        self.delay = delay

    def __iter__(self) -> Any:
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(start, self.size, step):
            if self.delay:
                time.sleep(self.delay)
            yield float(i)


class SlowCollate:
    """default_collate after sleeping ``delay`` seconds: collate time must be counted."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, batch: list) -> torch.Tensor:
        time.sleep(self.delay)
        return default_collate(batch)


class MarkWorker:
    """A user worker_init_fn with visible effects.

    Writes ``<directory>/<worker id>-<pid>`` holding the label the session
    gave this process (empty outside a session), and logs ``'init/mark'``
    into hub ``hub``: both show that it ran, and ran after labelling.
    """

    def __init__(self, directory: str, hub: str) -> None:
        self.directory = directory
        self.hub = hub

    def __call__(self, worker_id: int) -> None:
        import shmlog
        from shmlog import MessageHub

        session = shmlog.current_session()
        label = ""
        if session is not None:
            label = session.shared.slot_labels()[session.shared.thread_slot()]
        path = os.path.join(self.directory, f"{worker_id}-{os.getpid()}")
        with open(path, "w") as f:
            f.write(label)
        MessageHub.get_instance(self.hub).update_scalar("init/mark", float(worker_id))


def marks(directory: str) -> list[tuple[int, int, str]]:
    """``(worker id, pid, label)`` for every MarkWorker call, sorted."""
    result = []
    for entry in os.listdir(directory):
        worker, pid = entry.split("-")
        with open(os.path.join(directory, entry)) as f:
            result.append((int(worker), int(pid), f.read()))
    return sorted(result)

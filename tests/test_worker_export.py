"""The hook's per-worker export lists DataLoader workers only, also after a resume."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os

import pytest

import shmlog
from shmlog import HistoryBuffer, MessageHub

pytestmark = [
    pytest.mark.needs_torch,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (importlib.util.find_spec("torch") and importlib.util.find_spec("mmengine")),
        reason="needs torch and mmengine (pip install -e '.[mmengine]')",
    ),
]


def _as_worker(hub_name: str, value: float) -> None:
    os.environ["SHMLOG_WORKER_ID"] = "0"
    MessageHub.get_instance(hub_name).update_scalar("train/worker_data_time", value)


def test_a_resumed_history_does_not_become_a_frozen_main_series(name: str) -> None:
    from shmlog.mmengine.hook import worker_values

    hub_name = f"resume-{name}"
    with shmlog.init(name):
        hub = MessageHub.get_instance(hub_name)
        # What a checkpoint brings back: the key's history, restored by the main process.
        hub.load_state_dict({"log_scalars": {"train/worker_data_time": HistoryBuffer([0.5, 0.5], [1, 1])},
                             "runtime_info": {}, "resumed_keys": {"train/worker_data_time": True}})
        child = multiprocessing.get_context("fork").Process(target=_as_worker, args=(hub_name, 0.1))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert set(hub.get_scalar("train/worker_data_time").per_writer()) == {"main", "worker0"}
        assert worker_values(hub, 10) == {"worker_data_time/worker0": pytest.approx(0.1)}

"""A plain loop logs a step in one call; the exports carry each DataLoader worker's series."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

import shmlog
from shmlog import MessageHub

pytestmark = pytest.mark.timeout(120)


def _as_worker(worker: int, hub_name: str, value: float) -> None:
    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    MessageHub.get_instance(hub_name).update_scalar("train/worker_data_time", value)


def test_log_step_makes_the_lines_and_the_exports(tmp_path: Path, name: str) -> None:
    hub_name = f"steps-{name}"
    log_file = tmp_path / "run.log"
    with shmlog.init(name, log_file=str(log_file), log_processor=dict(window_size=2),
                     log_interval=2, hub=hub_name, tensorboard=False) as session:
        ctx = multiprocessing.get_context("fork")
        for worker, value in ((0, 0.25), (1, 0.75)):
            child = ctx.Process(target=_as_worker, args=(worker, hub_name, value))
            child.start()
            child.join(60)
            assert child.exitcode == 0
        for i in range(4):
            shmlog.log_step({"loss": float(i), "lr": 0.1},
                            **({"dataloader_len": 2, "max_epochs": 2} if i == 0 else {}))
        assert session.flush(timeout=60)
        lines = (tmp_path / "run" / "run.log").read_text()
    assert "Epoch(train) [1][2/2]" in lines and "Epoch(train) [2][2/2]" in lines, lines
    assert "loss: 2.5000" in lines  # the window of the last two steps
    rows = [json.loads(line) for line in (tmp_path / "run" / "scalars.jsonl").open()]
    assert [row["step"] for row in rows] == [2, 4]
    assert rows[-1]["worker_data_time/worker0"] == 0.25
    assert rows[-1]["worker_data_time/worker1"] == 0.75
    assert MessageHub.get_instance(hub_name).get_scalar("train/loss").totals().updates == 4


def test_log_step_refuses_what_is_not_a_dict() -> None:
    with pytest.raises(TypeError, match="scalars: expected a dict, got list"):
        shmlog.log_step([1.0])

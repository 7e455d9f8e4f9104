"""Iteration lines carry the time their step was reported, and exports never hold them up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import shmlog
from shmlog import MessageHub
from shmlog.wire import Progress
from shmlog.writer import exports
from shmlog.writer.lines import reported_at

pytestmark = pytest.mark.timeout(120)


class _StuckTensorBoard:
    """A SummaryWriter that takes as long to make as the test says (importing one can take s)."""

    def __init__(self, release: threading.Event, made: list) -> None:
        release.wait(60)
        self.steps: list[int] = []
        made.append(self)

    def add_scalar(self, name: str, value: float, step: int) -> None:
        self.steps.append(step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_line_is_written_while_tensorboard_is_stuck_and_carries_its_report_time(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    release, made = threading.Event(), []
    monkeypatch.setattr(exports, "tensorboard_installed", lambda: True)
    monkeypatch.setattr(exports, "_tensorboard",
                        lambda export_dir, wanted: _StuckTensorBoard(release, made))
    log_file = tmp_path / "run.log"
    hub_name = f"hub-{name}"
    try:
        with shmlog.init(name, log_file=str(log_file), log_processor=dict(window_size=1),
                         log_interval=1, log_writer="thread", tensorboard=True,
                         hub=hub_name) as session:
            MessageHub.get_instance(hub_name).update_scalar("train/loss", 1.5)
            reported = time.time()
            shmlog.report_progress("train", 0, iter=0, max_iters=2, dataloader_len=2,
                                   hub=hub_name)
            # The writer gets there while TensorBoard is still being made.
            assert session.flush(timeout=30)
            lines = (tmp_path / "run" / "run.log").read_text().splitlines()
            assert [line for line in lines if "loss: 1.5000" in line], lines
            line = next(line for line in lines if "loss: 1.5000" in line)
            assert line.startswith(time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(reported)))
            release.set()
        assert made and made[0].steps == [1]  # exported all the same, before close returned
    finally:
        release.set()


def test_reported_at_is_the_wall_time_of_the_report() -> None:
    five_seconds_ago = time.monotonic_ns() - 5_000_000_000
    progress = Progress("train", 0, 0, 0, None, None, None, "iter", five_seconds_ago)
    assert abs(reported_at(progress) - (time.time() - 5.0)) < 0.5
    assert reported_at(progress._replace(at_ns=None)) is None

"""Iteration lines carry the time their step was reported, and exports never hold them up."""

from __future__ import annotations

import os
import sys
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


# Stands in for ``python -m shmlog.writer.tensorboard``: it cannot start writing until
# the test opens the FIFO (making a SummaryWriter can take seconds), then records the
# steps it is fed.
_STUCK_EXPORT = """
import json, sys
fifo, steps = sys.argv[1], sys.argv[2]
open(fifo).close()
with open(steps, "w") as out:
    for line in sys.stdin:
        out.write(str(json.loads(line)[1]) + chr(10))
"""


def test_a_line_is_written_while_tensorboard_is_stuck_and_carries_its_report_time(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fifo, steps = tmp_path / "release", tmp_path / "steps"
    os.mkfifo(fifo)
    monkeypatch.setattr(exports, "tensorboard_installed", lambda: True)
    monkeypatch.setattr(exports, "TENSORBOARD_PROGRAM",
                        (sys.executable, "-c", _STUCK_EXPORT, str(fifo), str(steps)))
    log_file = tmp_path / "run.log"
    hub_name = f"hub-{name}"
    released = False
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
            assert not steps.exists()  # the export is still stuck
            _release(fifo)
            released = True
        # Exported all the same, before close returned.
        assert steps.read_text().split() == ["1"]
    finally:
        if not released:
            _release(fifo)


def _release(fifo: Path) -> None:
    """Open the FIFO for writing without waiting for a reader (it may be gone)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        # no reader (yet): open it blocking in a thread that cannot hang the test
        threading.Thread(target=lambda: open(fifo, "w").close(), daemon=True).start()


def test_reported_at_is_the_wall_time_of_the_report() -> None:
    five_seconds_ago = time.monotonic_ns() - 5_000_000_000
    progress = Progress("train", 0, 0, 0, None, None, None, "iter", five_seconds_ago)
    assert abs(reported_at(progress) - (time.time() - 5.0)) < 0.5
    assert reported_at(progress._replace(at_ns=None)) is None

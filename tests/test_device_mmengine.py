"""MMEngine's Runner with ShmlogHook logs the model's device losses without reading them.

MMEngine's own ``MessageHub.update_scalar`` calls ``.item()`` on every value of
the model's ``log_vars`` at every iteration.  ``tests/_device_runner.py`` runs
a Runner whose losses are fake device tensors that raise when read that way
(``shmlog.stats.device_fake``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.needs_torch, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _torch_and_mmengine() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mmengine")

PROGRAM = Path(__file__).with_name("_device_runner.py")


def run(work_dir: Path, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(PROGRAM), str(work_dir), *args],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_with_shmloghook_losses_land_in_order_with_one_wait_per_logged_line(
        tmp_path: Path) -> None:
    lines = run(tmp_path / "with", "--shmlog")
    assert "done" in lines, lines
    assert f"loss {[float(i) for i in range(1, 11)]}" in lines
    assert "waits 2" in lines  # LoggerHook's lines at iterations 5 and 10, nothing between
    assert "staged 20" in lines  # loss and aux of every iteration took the deferred path
    log = next((tmp_path / "with").rglob("*.log")).read_text()
    # The lines show what .item() would have given: the window mean and the current aux.
    assert "loss: 3.0000  aux: 2.5000" in log
    assert "loss: 5.5000  aux: 5.0000" in log


def test_without_it_mmengine_reads_every_device_loss(tmp_path: Path) -> None:
    lines = run(tmp_path / "without")
    assert any(line.startswith("error a blocking read") for line in lines), lines

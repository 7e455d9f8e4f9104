"""scripts/gpu_check.py without a GPU: it says so, and its flow runs on the fake device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"

pytestmark = [pytest.mark.needs_torch, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _torch() -> None:
    pytest.importorskip("torch")


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.pop("SHMLOG_SESSION", None)
    return subprocess.run([sys.executable, str(SCRIPT), "--wheels", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)


def test_without_a_gpu_it_checks_nothing_and_says_so(tmp_path: Path) -> None:
    done = _run(tmp_path=tmp_path)
    assert done.returncode == 2
    assert "no CUDA GPU here" in done.stderr


def test_the_dry_run_goes_through_every_check_on_the_fake_device(tmp_path: Path) -> None:
    done = _run("--cpu-dry-run", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for heading in ("1. 40 update_scalar", "2. launch-bound loop", "4. the reduce exchange"):
        assert heading in out, out
    assert "history equals the .item() values (40/40 equal)" in out
    assert "FAILED" not in out
    assert "all checks passed" in out


def test_wheels_that_cannot_be_installed_stop_it_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    done = _run("--cpu-dry-run", tmp_path=tmp_path)
    assert done.returncode == 1
    assert "set-up: pip could not install the wheels of" in done.stderr

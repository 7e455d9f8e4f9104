"""The README's demo runs to the end and leaves what it says it leaves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def _run(tmp_path: Path, *extra: str) -> tuple[str, Path]:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--work-dir", str(tmp_path), "--epochs", "2",
         "--workers", "2", *extra],
        capture_output=True, text=True, timeout=170, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, tmp_path / "demo"


def _check_run_dir(run: Path, out: str) -> None:
    master = (run / "demo.log").read_text()
    assert "Epoch(train) [1][10/40]" in master
    assert "Epoch(train) [2][40/40]" in master
    assert "rank 0 finished epoch 2" in master
    rank1 = (run / "demo_rank1.log").read_text()
    assert "rank 1 finished epoch 2" in rank1
    assert "Epoch(train)" not in rank1
    rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["mode"] == "train"]
    assert [r["step"] for r in train] == list(range(10, 81, 10))
    assert all(r["loss"] > 0 for r in train)
    for label in ("rank0/worker0", "rank0/worker1", "rank1/worker0", "rank1/worker1"):
        assert label in out
    assert f"log folder:   {run}" in out


@pytest.mark.timeout(180)
def test_demo_without_torch(tmp_path: Path) -> None:
    out, run = _run(tmp_path, "--no-torch")
    _check_run_dir(run, out)


@pytest.mark.needs_torch
@pytest.mark.timeout(180)
def test_demo_with_torch_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out, run = _run(tmp_path)
    _check_run_dir(run, out)
    assert "Epoch(val) [2][10/10]" in (run / "demo.log").read_text()
    if "curves:       not drawn" not in out:
        png = run / "curves.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Smoke runs of the benchmark scripts: they must keep working as the library changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SHMLOG_SESSION", None)  # a benchmark starts its own sessions
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_bench_shared_quick(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = _run("bench_shared.py", "--no-mmengine", "--json", str(out))
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    text = done.stdout
    for section in ("(a) update_scalar", "(b) 4 writer processes", "(c) LogProcessor"):
        assert section in text, f"section {section!r} missing from:\n{text}"
    assert "exact: yes" in text
    assert "exact: no" not in text
    assert "WARNING" not in text, text
    figures = json.loads(out.read_text())
    assert figures["exact"] is True
    assert figures["shm_left_as_found"] is True
    assert figures["b"]["shmlog"]["updates"] == figures["b"]["queue"]["updates"]


@pytest.mark.skipif(
    not (SCRIPTS / "bench_history.py").exists(), reason="scripts/bench_history.py is absent"
)
def test_bench_history_quick() -> None:
    done = _run("bench_history.py", "--no-mmengine")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "MessageHub.update_scalar" in done.stdout


def test_bench_metrics_quick(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    out = tmp_path / "figures.json"
    done = _run("bench_metrics.py", "--json", str(out))
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "one scrape of 32 keys x 8 writers" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["shm_left_as_found"] is True
    for phase in ("idle", "logging"):
        # 256 rings: 7 scalar metrics each, min/max/current included once written
        assert figures[phase]["samples"] > 7 * 256
        assert figures[phase]["read_ms"] > 0


@pytest.mark.needs_torch
@pytest.mark.timeout(300)
def test_bench_training_job_runs_and_counts_its_lines() -> None:
    """One job of the training benchmark (the comparison alternates such jobs)."""
    pytest.importorskip("torch")
    env = dict(os.environ)
    env.pop("SHMLOG_SESSION", None)
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_training.py"), "--job", "shmlog",
         "--warmup", "5", "--iters", "20"],
        capture_output=True, text=True, timeout=280, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0]
    assert result["its"] > 0 and result["cpu_per_iter"] > 0
    # 25 iterations, a line every 10: the logging rank's (rank 0's) lines.
    assert result["lines"] == 2

"""scripts/mmengine_tests.py: MMEngine-style tests run with MMEngine's names meaning shmlog's objects.

MMEngine's own test files are not in this repository (nor in MMEngine's
sdist); these test files of ours use its names the way its tests do.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Checked without importing them here: MMEngine's tests run in a child process.
pytestmark = [
    pytest.mark.skipif(
        not (importlib.util.find_spec("torch") and importlib.util.find_spec("mmengine")),
        reason="needs torch and mmengine (pip install -e '.[mmengine]')",
    ),
    pytest.mark.needs_torch,
]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mmengine_tests.py"

LOGGER_TESTS = '''
from unittest.mock import patch

import pytest

from mmengine.logging import HistoryBuffer, MMLogger
from mmengine.logging.logger import _get_device_id
from mmengine.runner import LogProcessor


def test_names_are_shmlogs():
    assert MMLogger.__module__ == "shmlog.api.logger"
    assert HistoryBuffer.__module__ == "shmlog.stats.history_buffer"
    assert LogProcessor.__module__ == "shmlog.format.log_processor"
    assert callable(_get_device_id)


@patch("mmengine.logging.logger._get_rank", lambda: 1)
def test_a_patch_of_the_module_reaches_mmlogger(tmp_path):
    logger = MMLogger.get_instance("patched", log_file=str(tmp_path / "x.log"))
    assert len(logger.handlers) == 1  # rank 1 without distributed: no file


def test_asserts_are_met():
    with pytest.raises(AssertionError):
        HistoryBuffer([1, 2], [1])


def test_this_one_fails():
    assert HistoryBuffer([1], [1]).current() == 2
'''


def run(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(checkout), *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(150)
def test_the_script_counts_what_passes_against_shmlog(tmp_path: Path) -> None:
    tests = tmp_path / "tests" / "test_logging"
    tests.mkdir(parents=True)
    (tests / "test_logger.py").write_text(textwrap.dedent(LOGGER_TESTS))
    done = run(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MMEngine's tests against shmlog: 3 of 4 applicable tests pass (4 run)" in done.stdout
    assert "  failed: test_logger::test_this_one_fails" in done.stdout
    assert "test_logger.py differs from MMEngine 0.10.7's" in done.stderr
    assert "missing:" in done.stderr  # the other four files

    against = run(tmp_path, "--against", "mmengine", "-k", "not this_one")
    assert "MMEngine's tests against mmengine: 2 of 3 applicable tests pass" in against.stdout
    assert "  failed: test_logger::test_names_are_shmlogs" in against.stdout


def test_the_script_says_where_the_tests_come_from(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode != 0
    assert "git clone --branch v0.10.7 https://github.com/open-mmlab/mmengine" in done.stderr

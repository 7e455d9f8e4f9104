"""The metrics extra: optional, named when missing, and every metric documented.

These run whether prometheus_client is installed or not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from _shared_workers import child_env

from shmlog.format.exposition import METRICS

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30.0
DOCS = Path(__file__).resolve().parent.parent / "docs"


# Run with prometheus_client made unimportable, as where it is not installed.
WITHOUT_PROMETHEUS = """
import io, sys
sys.modules["prometheus_client"] = None
import shmlog
from shmlog.tools import cli
assert "prometheus_client" not in [m for m in sys.modules if sys.modules[m] is not None]
try:
    shmlog.init(sys.argv[1], metrics_port=0)
except ImportError as exc:
    print("INIT", exc)
with shmlog.init(sys.argv[1], log_writer="none"):
    err = io.StringIO()
    sys.stderr = err
    status = cli.main(["serve", sys.argv[1]])
    sys.stderr = sys.__stderr__
    print("SERVE", status, err.getvalue().strip())
"""


def test_without_prometheus_client_the_metrics_commands_name_the_extra(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_PROMETHEUS, name], capture_output=True,
                          text=True, env=child_env(), timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    missing = ("the metrics endpoint needs prometheus_client, which is not installed: "
               "pip install 'shmlog[metrics]'")
    assert done.stdout.splitlines() == [f"INIT {missing}", f"SERVE 1 shmlog serve: {missing}"]


def test_import_shmlog_does_not_import_prometheus_client() -> None:
    code = "import shmlog, sys; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=TIMEOUT, check=True)
    assert done.stdout.strip() == "False"


def test_operations_doc_lists_every_metric_with_its_type_and_labels() -> None:
    rows = {}
    for line in (DOCS / "operations.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`shmlog_"):
            for name in re.findall(r"`(shmlog_\w+)`", cells[0]):
                rows[name] = (cells[1], cells[2])
    assert set(rows) == set(METRICS)
    for name, (kind, labels, _help) in METRICS.items():
        assert rows[name] == (kind, ", ".join(labels)), name

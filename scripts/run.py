#!/usr/bin/env python3
"""Set up a virtual environment for this checkout and run the demo, the tests or the linter.

    python3 scripts/run.py demo     # the demo training run
    python3 scripts/run.py test     # the whole test suite (extra args go to pytest)
    python3 scripts/run.py lint     # ruff
    python3 scripts/run.py bench    # the benchmarks

The environment lives in ``.venv`` at the top of the checkout and is
reinstalled only when ``setup.cfg`` changes.  Only the standard library is
used here, so a fresh machine needs nothing but Python 3.9+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SHMLOG_VENV", ROOT / ".venv"))
EXTRAS = "test,dev,plot,tensorboard,metrics"


def _python() -> Path:
    return VENV / "bin" / "python"


def _stamp() -> str:
    digest = hashlib.sha256((ROOT / "setup.cfg").read_bytes())
    digest.update(EXTRAS.encode())
    return digest.hexdigest()


def ensure_env() -> Path:
    python = _python()
    stamp_file = VENV / ".shmlog-installed"
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == _stamp():
        return python
    if not python.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("installing shmlog and its test dependencies", flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{EXTRAS}]"], check=True)
    stamp_file.write_text(_stamp())
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "bench"}:
        print(__doc__.strip())
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_env())
    os.chdir(ROOT)
    if command == "demo":
        return subprocess.call([python, "scripts/demo.py", *rest])
    if command == "test":
        return subprocess.call([python, "-m", "pytest", *rest])
    if command == "lint":
        return subprocess.call([python, "-m", "ruff", "check", "shmlog", "tests", "scripts", *rest])
    status = 0
    for script in ("scripts/bench_history.py", "scripts/bench_shared.py",
                   "scripts/bench_logging.py", "scripts/bench_training.py",
                   "scripts/bench_reduce.py", "scripts/bench_metrics.py"):
        print(f"== {script}", flush=True)
        status |= subprocess.call([python, script, *rest])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Run MMEngine 0.10.7's own unit tests of the logging classes, unmodified, against shmlog.

    .venv/bin/python scripts/mmengine_tests.py MMENGINE_CHECKOUT [--against mmengine] [PYTEST ARGS]

MMENGINE_CHECKOUT holds MMEngine's ``tests/`` directory (a clone of
open-mmlab/mmengine at tag v0.10.7, or a copy of its ``tests/``): the tests
are not in MMEngine's sdist or wheel, so they come from there.  The files run
are ``tests/test_logging/test_{history_buffer,message_hub,logger}.py``,
``tests/test_runner/test_log_processor.py`` and
``tests/test_utils/test_manager.py``, with MMEngine's names for these classes
pointing at shmlog's objects (the ``mmengine_alias`` pytest plugin beside
this script).  ``--against mmengine`` runs them against MMEngine itself.

They need torch, mmengine (``pip install -e '.[mmengine]'``), and
``parameterized``, which MMEngine's test requirements list.

Six of the tests check what shmlog deliberately does differently; they run
and are reported, but do not count (see ``NOT_APPLICABLE``).  The exit status
is 0 when every other test passes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The files, with their sha256 at MMEngine's tag v0.10.7: a different file still
# runs, with a warning that the counts below may not apply to it.
FILES = {
    "tests/test_logging/test_history_buffer.py":
        "b32508f4d69cc14d352bd931931123cbcec014530ec8a6637e84aa78b951f318",
    "tests/test_logging/test_message_hub.py":
        "44a4cd50519dcf0fbc0fc01d25ab5865fabf53b5e877402e883c669a9e970b32",
    "tests/test_logging/test_logger.py":
        "9bffbb9d1ead6c70a6699437b19e67b7ea2695700cfae2932a66595b03246444",
    "tests/test_runner/test_log_processor.py":
        "ef48a14d0c55ec8b043283c545891d0bb8a87cb8ef3f26f3e1206ca5fc0e8642",
    "tests/test_utils/test_manager.py":
        "dd37b402ad7253e3306016e103104bb243c5be70a39827e396ee5de15af04084",
}

_LAYOUT = ("reads the log file at MMEngine's path; shmlog writes the seed's layout "
           "(tmp.log -> tmp/tmp.log, tmp/tmp_rank1.log)")
NOT_APPLICABLE = {
    "test_logger::TestLogger::test_init_rank1":
        "expects MMEngine's rank file name <stem>_<host>_device<id>_rank<r>.log; " + _LAYOUT,
    "test_logger::TestLogger::test_handler[10]": _LAYOUT,
    "test_logger::TestLogger::test_handler[20]": _LAYOUT,
    "test_logger::TestLogger::test_handler[30]": _LAYOUT,
    "test_logger::test_get_device_id":
        "the device id only names MMEngine's rank files, which shmlog's layout does not use",
    "test_log_processor::TestLogProcessor::test_with_runner":
        "trains MMEngine's Runner, which keeps MMEngine's own classes (bound at import); "
        "shmlog.mmengine's tests cover the Runner",
}


def test_root(path: Path) -> Path:
    """The directory that holds ``tests/`` (``path`` itself or its parent)."""
    for root in (path, path.parent):
        if (root / "tests" / "test_logging").is_dir():
            return root
    raise SystemExit(
        f"{path}: no tests/test_logging/ here; give a checkout of open-mmlab/mmengine "
        f"(git clone --branch v0.10.7 https://github.com/open-mmlab/mmengine)"
    )


def check_files(root: Path) -> list[str]:
    found = []
    for name, digest in FILES.items():
        path = root / name
        if not path.is_file():
            print(f"missing: {path}", file=sys.stderr)
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            print(f"warning: {name} differs from MMEngine 0.10.7's", file=sys.stderr)
        found.append(name)
    return found


def test_id(case: ET.Element) -> str:
    """``module::Class::name`` (or ``module::name``) of a JUnit XML test case."""
    parts = case.get("classname", "").split(".")
    if len(parts) > 1 and parts[-1][:1].isupper():
        return f"{parts[-2]}::{parts[-1]}::{case.get('name')}"
    return f"{parts[-1]}::{case.get('name')}"


def outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag in ("failure", "error"):
            return "failed"
        if child.tag == "skipped":
            return "skipped"
    return "passed"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a directory holding MMEngine's tests/")
    parser.add_argument("--against", choices=("shmlog", "mmengine"), default="shmlog")
    args, pytest_args = parser.parse_known_args(argv)
    root = test_root(args.checkout.resolve())
    files = check_files(root)
    if not files:
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["SHMLOG_ALIAS"] = "1" if args.against == "shmlog" else "0"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        command = [
            sys.executable, "-m", "pytest", *files, "-p", "mmengine_alias",
            "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(root),
            "--continue-on-collection-errors", "-q", "-rfE", f"--junitxml={report}",
            "-W", "ignore::DeprecationWarning",
            "-W", "ignore:pkg_resources is deprecated:UserWarning", *pytest_args,
        ]
        status = subprocess.call(command, cwd=root, env=env)
        if not report.exists():
            return status or 2
        cases = {test_id(c): outcome(c) for c in ET.parse(report).getroot().iter("testcase")}
    applicable = {k: v for k, v in cases.items() if k not in NOT_APPLICABLE}
    passed = sum(v == "passed" for v in applicable.values())
    print(f"\nMMEngine's tests against {args.against}: {passed} of {len(applicable)} "
          f"applicable tests pass ({len(cases)} run)")
    for name, value in applicable.items():
        if value != "passed":
            print(f"  {value}: {name}")
    for name, reason in NOT_APPLICABLE.items():
        if name in cases:
            print(f"  not counted ({cases[name]}): {name}: {reason}")
    return 0 if applicable and passed == len(applicable) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

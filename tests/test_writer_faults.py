"""Log files that go wrong under the writer: removed, or on a full disk.

A removed log directory is made again and the lines go on in a new file,
with a note; a full disk costs the records that do not fit, which are
counted: one message on stderr when writing starts failing, a note with the
count in the file when space returns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _shared_workers import child_env
from _writer_workers import TIMEOUT, messages_of, numbered

import shmlog
from shmlog import MMLogger
from shmlog.wire import LINE, RECORD


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_a_log_directory_removed_mid_run_is_made_again(
    tmp_path: Path, name: str, log_writer: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file, log_writer=log_writer) as session:
        logger = MMLogger.get_instance(f"removed-{name}", log_file=log_file)
        for i in range(10):
            logger.info(f"main line {i}")
        assert session.flush()
        shutil.rmtree(tmp_path / "tmp")
        for i in range(10, 1010):
            logger.info(f"main line {i}")
        assert session.flush()
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert numbered(messages, "main") == list(range(10, 1010))
    assert any("was removed while the run wrote it" in m for m in messages)


FULL_DISK = r"""
import os, sys
import shmlog
from shmlog import MMLogger

name, directory = sys.argv[1:3]
log_file = os.path.join(directory, "tmp.log")
filler = os.path.join(directory, "filler")
with shmlog.init(name, log_file=log_file) as session:
    logger = MMLogger.get_instance("full", log_file=log_file)
    logger.handlers[0].setLevel("ERROR")  # the terminal
    logger.info("main line 0")
    assert session.flush()
    # Fill the disk, then log into it.
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(1, 2001):
        logger.info(f"main line {i}")
    assert session.flush()
    os.unlink(filler)  # space returns
    logger.info("main line 2001")
    assert session.flush()
print("done", flush=True)
"""


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, timeout=TIMEOUT)
    return probe.returncode == 0


@pytest.mark.timeout(120)
@pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare -m for a small tmpfs")
def test_a_full_disk_costs_counted_records_and_one_message(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "small"
    directory.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(textwrap.dedent(FULL_DISK))
    mount = f"mount -t tmpfs -o size=256k tmpfs {directory}"
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'{mount} && "$0" "$1" "$2" "$3" && cp -r {directory}/tmp {tmp_path}/copy',
         sys.executable, str(script), name, str(directory)],
        capture_output=True, text=True, timeout=TIMEOUT, env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]
    # One message when writing started failing, not one per record.
    failures = [line for line in done.stderr.splitlines() if "cannot write log file" in line]
    assert len(failures) == 1, done.stderr[:2000]
    assert done.stderr.count("Traceback") == 0
    messages = messages_of(tmp_path / "copy" / "tmp.log")
    kept = numbered(messages, "main")
    notes = [m for m in messages if "were lost while it could not be written" in m]
    assert len(notes) == 1
    lost = int(notes[0].split("shmlog: ")[1].split()[0])
    assert kept[0] == 0 and kept[-1] == 2001
    assert lost > 0 and len(kept) + lost == 2002  # every record: written, or counted
    assert kept == sorted(kept) and len(set(kept)) == len(kept)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_a_malformed_record_is_skipped_and_said_once_and_the_writer_goes_on(
    tmp_path: Path, name: str, log_writer: str, capfd: pytest.CaptureFixture[str]
) -> None:
    from shmlog.api.record_handler import _put

    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file, log_writer=log_writer) as session:
        logger = MMLogger.get_instance(f"malformed-{name}", log_file=log_file)
        logger.info("main line 0")
        assert session.flush()
        writer = session.writer_pid
        route = logger.handlers[-1]._route_id
        # Not what a record ring carries: too few fields, a route id of the wrong type.
        assert _put(session.shared, (1.0, RECORD, 20, "INFO"))
        assert _put(session.shared, (1.0, RECORD, 20, "INFO", "x", "m", "p", "f", 1, None, None,
                                     0, -1, os.getpid(), 12345))
        for i in range(1, 6):
            logger.info(f"main line {i}")
        assert _put(session.shared, (1.0, RECORD, 20, "INFO", "x", "m", "p", "f", 1, None, None,
                                     0, -1, os.getpid(), route, "extra"))
        logger.info("main line 6")
        # A line (LogLine) for the file the line before went to, whose text is no text.
        assert _put(session.shared, (1.0, LINE, 20, b"main line 7\n", 0, route))
        logger.info("main line 7")
        assert session.flush()
        assert session.writer_pid == writer  # the same writer, still writing
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "could not be written" in line]
    assert said[0].startswith("shmlog: a log record from main could not be written ("), err
    assert said[0].endswith("records like it are skipped and counted")
    # Once, then at most the count when the writer stops (the sidecar may outlive the check).
    assert said[1:] in ([], ["shmlog: 4 log records could not be written and were skipped"]), err
    assert numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "main") == list(range(8))

"""What a message's content, a signal handler or a handler's formatter may do to a session.

No record's content stops the log writer or the lines around it; a signal
handler may log at any point of the process, also while it is inside a
``logger.info``; and a formatter the user sets on the file handler is the
one the file is written with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _writer_workers import messages_of

import shmlog
from shmlog import MMLogger


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_a_lone_surrogate_is_written_escaped_and_the_lines_around_it_stay(
    tmp_path: Path, name: str, log_writer: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")
    with shmlog.init(name, log_file=log_file, log_writer=log_writer) as session:
        logger = MMLogger.get_instance(f"surrogate-{name}", log_file=log_file)
        logger.info("line before")
        logger.info("lone \udc80 surrogate")
        logger.warning(f"decoded {raw}")
        logger.info("line after")
        assert session.flush()
        logger.info("line later")
        assert session.flush()
    text = (tmp_path / "tmp" / "tmp.log").read_text(encoding="utf-8")
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert [m for m in messages if m.startswith("line")] == [
        "line before", "line after", "line later"]
    assert "lone \\udc80 surrogate" in text
    assert "decoded caf\\udce9" in text

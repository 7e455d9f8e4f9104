"""What a message's content, a signal handler or a handler's formatter may do to a session.

No record's content stops the log writer or the lines around it; a signal
handler may log at any point of the process, also while it is inside a
``logger.info``; and a formatter the user sets on the file handler is the
one the file is written with.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _metrics import closing_new_loggers
from _shared_workers import child_env
from _writer_workers import messages_of, numbered

import shmlog
from shmlog import HistoryBuffer, MessageHub, MMLogger
from shmlog.api.config import ENV_RECORD_RING_BYTES as ENV_RING_BYTES
from shmlog.api.config import RECORD_RING_BYTES as RING_BYTES
from shmlog.api.config import record_ring_bytes
from shmlog.shm.record_rings import longest_text
from shmlog.shm.session import destroy


@pytest.fixture(autouse=True)
def _loggers_closed():
    with closing_new_loggers():  # none of these loggers stays 'current' for other tests
        yield


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


SIGNALS = r"""
import itertools, os, signal, sys
import shmlog
from shmlog import MMLogger
from shmlog.shm.record_rings import RecordProducer

name, log_file, log_writer = sys.argv[1:4]
handled, numbers = [], itertools.count(1)
with shmlog.init(name, log_file=log_file, log_writer=log_writer) as session:
    logger = MMLogger.get_instance("signals", log_file=log_file)
    logger.handlers[0].setLevel("ERROR")  # the terminal

    def handler(signum, frame):
        handled.append(signum)
        logger.info(f"handler line {next(numbers)}")

    signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGALRM, handler)
    # The handler runs while this thread is inside the ring's put (ship lock held).
    put, inside = RecordProducer.put, []

    def interrupted_put(self, *args, **kwargs):
        if len(inside) < 200 and not inside[-1:] == [True]:
            inside.append(True)
            os.kill(os.getpid(), signal.SIGUSR1)
            inside[-1] = False
        return put(self, *args, **kwargs)

    RecordProducer.put = interrupted_put
    for i in range(300):
        logger.info(f"main line {i}")
    assert session.flush()
    RecordProducer.put = put
    # And a timer that fires wherever it fires, as a user's would.
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    for i in range(300, 5300):
        logger.info(f"main line {i}")
        if i % 500 == 0:  # the ring never fills: nothing is dropped
            assert session.flush()
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    assert session.flush()
print("handled", len(handled), flush=True)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_a_signal_handler_may_log_while_the_thread_it_interrupted_logs(
    tmp_path: Path, name: str, log_writer: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    script = tmp_path / "signals.py"
    script.write_text(SIGNALS)
    try:
        done = subprocess.run(
            [sys.executable, str(script), name, log_file, log_writer], env=child_env(),
            capture_output=True, text=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        destroy(name)  # what the killed child left
        pytest.fail("logging from a signal handler hung")
    assert done.returncode == 0, done.stderr
    handled = int(done.stdout.split()[-1])
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert not [m for m in messages if "dropped" in m or "lost" in m]
    assert numbered(messages, "main") == list(range(5300))
    # Every handler's line, once (a handler interrupted by the next signal
    # may log after it, so the order is the order they logged in).
    assert sorted(numbered(messages, "handler")) == list(range(1, handled + 1))
    assert handled >= 200


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this object")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread", None])
def test_an_argument_whose_str_raises_goes_to_handle_error_at_every_level(
    tmp_path: Path, name: str, log_writer: str | None, capsys: pytest.CaptureFixture
) -> None:
    log_file = str(tmp_path / "tmp.log")

    def log_all(logger: logging.Logger) -> None:
        for level in (logging.INFO, logging.WARNING, logging.ERROR):
            logger.log(level, "x %s", _Unprintable())  # must not raise
        logger.warning("line after")

    if log_writer is None:  # no session: the handlers write themselves
        logger = MMLogger.get_instance(f"unprintable-{name}", log_file=log_file)
        log_all(logger)
        for handler in logger.handlers:
            handler.flush()
    else:
        with shmlog.init(name, log_file=log_file, log_writer=log_writer) as session:
            logger = MMLogger.get_instance(f"unprintable-{name}", log_file=log_file)
            log_all(logger)
            assert session.flush()
    errors = capsys.readouterr().err
    # logging's rule: one report per handler and level, on stderr.
    assert errors.count("--- Logging error ---") >= 3, errors
    assert "no text for this object" in errors
    assert messages_of(tmp_path / "tmp" / "tmp.log")[-1:] == ["line after"]


CUSTOM = "CUSTOM|%(job)s|%(levelname)s|%(message)s"


def _log_through_custom_formatter(logger: logging.Logger) -> None:
    [handler] = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    handler.setFormatter(logging.Formatter(CUSTOM))
    logger.info("first", extra={"job": "j1"})
    logger.warning("twice", extra={"job": "j2"})
    logger.warning("twice", extra={"job": "j2"})  # the duplicate filter still applies
    try:
        raise ZeroDivisionError("on purpose")
    except ZeroDivisionError:
        logger.error("failed", exc_info=True, extra={"job": "j3"})
    logger.info("last", extra={"job": "j4"})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
@pytest.mark.parametrize("cfg", [None, {"type": "RotatingFileHandler", "maxBytes": 120,
                                        "backupCount": 9}])
def test_a_formatter_set_on_the_file_handler_writes_the_file_inside_a_session(
    tmp_path: Path, name: str, log_writer: str, cfg: dict | None
) -> None:
    alone = str(tmp_path / "alone.log")
    _log_through_custom_formatter(
        MMLogger.get_instance(f"alone-{name}", log_file=alone, file_handler_cfg=cfg))
    shared = str(tmp_path / "shared.log")
    with shmlog.init(name, log_file=shared, log_writer=log_writer) as session:
        _log_through_custom_formatter(
            MMLogger.get_instance(f"shared-{name}", log_file=shared, file_handler_cfg=cfg))
        assert session.flush()

    def files(stem: str) -> dict[str, str]:
        return {p.name.replace(stem, "x"): p.read_text(encoding="utf-8")
                for p in (tmp_path / stem).iterdir()}

    expected = files("alone")
    text = "".join(expected[n] for n in sorted(expected, reverse=True))  # oldest first
    assert text.startswith("CUSTOM|j1|INFO|first\nCUSTOM|j2|WARNING|twice\n")
    assert "ZeroDivisionError" in text and text.endswith("CUSTOM|j4|INFO|last\n")
    assert len(expected) == (1 if cfg is None else 3)  # rotated as the handler rotates
    assert files("shared") == expected


def p90_of_window(buffer: HistoryBuffer, window_size: int | None = None) -> float:
    """A statistic the log writer's process never sees registered."""
    values, _counts = buffer.data
    return float(np.percentile(values[-window_size:] if window_size else values, 90))


if not HistoryBuffer.knows_statistic("p90_of_window"):
    HistoryBuffer.register_statistics(p90_of_window)

REGISTERED_CFG = {
    "by_epoch": False,
    "custom_cfg": [{"data_src": "loss", "method_name": "p90_of_window", "window_size": 4,
                    "log_name": "loss_p90"}],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_a_registered_statistic_shows_in_the_lines_of_every_log_writer(
    tmp_path: Path, name: str, log_writer: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file, log_writer=log_writer, log_interval=4,
                     log_processor=REGISTERED_CFG, tensorboard=False) as session:
        hub = MessageHub.get_instance("mmengine")
        for i in range(8):
            hub.update_scalar("train/loss", float(i * i))
            shmlog.report_progress("train", i, iter=i, max_iters=8)
        assert session.flush()
    text = (tmp_path / "tmp" / "tmp.log").read_text(encoding="utf-8")
    assert "is not a registered" not in text
    lines = [line for line in text.splitlines() if "Iter(train)" in line]
    assert len(lines) == 2, text
    for line, window in zip(lines, ([0, 1, 4, 9], [16, 25, 36, 49])):
        assert f"loss_p90: {np.percentile(window, 90):.4f}" in line, line


def test_an_unknown_statistic_method_is_refused_at_init_naming_the_entry(name: str) -> None:
    cfg = {"by_epoch": False, "custom_cfg": [
        {"data_src": "loss", "method_name": "mean", "window_size": 4},
        {"data_src": "acc", "method_name": "p99_nobody_registered", "log_name": "acc_p99"},
    ]}
    with pytest.raises(ValueError) as refused:
        shmlog.init(name, log_processor=cfg)
    text = str(refused.value)
    assert "custom_cfg[1]['method_name'] 'p99_nobody_registered'" in text
    assert "'acc'" in text and "register_statistics" in text
    assert isinstance(refused.value, AssertionError)  # as MMEngine's checks raise
    # A method registered in this process is accepted (see the test above).
    with shmlog.init(name, log_processor=REGISTERED_CFG, log_writer="none"):
        pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ring", [None, str(1 << 20)])
def test_a_long_message_is_cut_on_its_own_line_unless_the_ring_is_made_larger(
    tmp_path: Path, name: str, ring: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ring is not None:
        monkeypatch.setenv(ENV_RING_BYTES, ring)
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file, log_writer="thread") as session:
        logger = MMLogger.get_instance(f"long-{name}", log_file=log_file)
        logger.handlers[0].setLevel("ERROR")  # the terminal
        logger.info("a" * 100_000)
        logger.warning("w" * 100_000)
        logger.info("line after")
        assert session.flush()
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert messages[-1] == "line after" and len(messages) == 3
    if ring is None:
        kept = longest_text(RING_BYTES)
        for message, letter in zip(messages, "aw"):
            assert message.endswith(" ... [truncated by shmlog]")
            assert set(message[:-len(" ... [truncated by shmlog]")]) == {letter}
            assert kept - 100 < len(message) <= kept + len(" ... [truncated by shmlog]")
    else:
        assert messages[:2] == ["a" * 100_000, "w" * 100_000]


def test_a_bad_record_ring_size_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_RING_BYTES, "1k")
    with pytest.raises(ValueError, match="SHMLOG_RECORD_RING_BYTES='1k'"):
        record_ring_bytes()

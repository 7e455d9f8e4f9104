"""Record rings and what crosses them: runs read back in order, and the two record shapes.

A training process puts each log record into its ring either as the finished
line (a LogLine: the common record in MMEngine's file layout) or as fields
(a LogRecordData: everything else); the writer reads a ring in runs.  These
tests hold the ring to its order across the end of its data area, and the
line to what the writer's own file handler would have written.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from _shared_workers import unique_name

import shmlog
from shmlog import MMLogger
from shmlog.format.formatter import FILE_DATEFMT, MMFormatter
from shmlog.shm.record_rings import RecordConsumer, RecordProducer, format_record_ring, record_ring_bytes
from shmlog.wire import decode_entry

pytestmark = pytest.mark.usefixtures("single_process_env")


def _ring(capacity: int) -> tuple[RecordProducer, RecordConsumer]:
    buf = memoryview(bytearray(record_ring_bytes(capacity)))
    format_record_ring(buf, 0, capacity, 7)
    return RecordProducer(buf, 0), RecordConsumer(buf, 0, "l0:0")


def test_take_reads_a_run_up_to_its_limit_or_the_first_newer_record() -> None:
    producer, consumer = _ring(4096)
    for index, created in enumerate([0.0, 0.1, 0.2, 5.0, 5.1, 0.3]):
        assert producer.put((created, index), 0.0) >= 0

    run, ends = consumer.take(10, 1.0)
    assert [record[1] for record in run] == [0, 1, 2]
    assert consumer.cursor == 0  # the caller moves it, record by record
    assert ends == sorted(ends) and len(set(ends)) == 3
    consumer.cursor = ends[-1]
    assert consumer.next() == (5.0, 3)  # the record that ended the run

    run, ends = consumer.take(10, 1.0)  # the first whatever its time; 5.1 is newer than 1.0
    assert [record[1] for record in run] == [3]
    consumer.cursor = ends[-1]
    run, ends = consumer.take(1, math.inf)
    assert [record[1] for record in run] == [4]
    consumer.cursor = ends[-1]
    run, ends = consumer.take(10, math.inf)
    assert [record[1] for record in run] == [5]
    consumer.cursor = ends[-1]
    assert consumer.take(10, math.inf) == ([], [])
    assert consumer.next() is None and not consumer.unread()


def test_runs_across_the_end_of_the_ring_keep_every_record_once_in_order() -> None:
    producer, consumer = _ring(512)
    read: list[int] = []
    put = 0
    for rounds in range(200):
        for _ in range(1 + rounds % 5):
            assert producer.put((float(put), put, "x" * (put % 23)), 0.0) >= 0
            put += 1
        while True:
            run, ends = consumer.take(3, math.inf)
            if not run:
                break
            # Part of a run, then the rest: positions are where each record ends.
            read.extend(record[1] for record in run[:2])
            consumer.cursor = ends[min(1, len(ends) - 1)]
        consumer.commit()
    assert read == list(range(put))
    assert producer.position() > 20 * 512  # the data area wrapped many times
    assert producer.backlog() == 0


# -- the two shapes of a log record ---------------------------------------------------------------


@pytest.fixture
def name() -> str:
    return unique_name("rr")



class _Keep(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return True


@pytest.mark.timeout(60)
@pytest.mark.parametrize("worker", [None, 3])
def test_plain_records_cross_as_the_line_the_writers_handler_writes(
    tmp_path: Path, name: str, worker: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INFO in MMEngine's file layout crosses as its finished line, which is the line an
    MMEngine file handler makes (a worker's marked); what that line cannot carry (a
    WARNING, filtered for duplicates by the writer; ERROR's location; a traceback; a
    stack) crosses as fields.  A filter added to the handler later runs in the process,
    and a formatter set on it makes the line there, which crosses finished."""
    import shmlog.api.record_handler as record_handler

    if worker is not None:
        monkeypatch.setenv("SHMLOG_WORKER_ID", str(worker))
    shipped: list[tuple] = []
    put = record_handler._put_into
    monkeypatch.setattr(record_handler, "_put_into",
                        lambda ring, data: shipped.append(data) or put(ring, data))
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"lines-{name}", log_file=log_file, log_level="DEBUG")
        keep = _Keep()
        logger.addFilter(keep)
        logger.info("plain %d, ünïcode", 1)
        logger.debug("debug %s", "too")
        logger.warning("a warning")
        logger.error("an error")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.info("with a traceback", exc_info=True)
        logger.info("with a stack", stack_info=True)
        handler = logger.handlers[-1]
        handler.addFilter(lambda record: "dropped" not in record.getMessage())
        logger.info("dropped by a filter added later")
        logger.info("after a filter")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.info("its own formatter")
        assert session.flush()
    line, fields = "LogLine", "LogRecordData"
    assert [type(decode_entry(data)).__name__ for data in shipped] == [
        line, line, fields, fields, fields, fields, line, line]
    assert decode_entry(shipped[7]).text == "its own formatter\n"
    assert "after a filter" in decode_entry(shipped[6]).text

    reference = MMFormatter(color=False, datefmt=FILE_DATEFMT)
    mark = "" if worker is None else f"[worker{worker}] "
    expected = []
    for record in keep.records[:2]:
        marked = logging.makeLogRecord({**record.__dict__, "msg": mark + record.getMessage(),
                                        "args": None})
        expected.append(reference.format(marked) + "\n")
    assert [decode_entry(data).text for data in shipped[:2]] == expected
    assert [decode_entry(data).levelno for data in shipped[:2]] == [logging.INFO, logging.DEBUG]
    assert {decode_entry(data).rank for data in shipped[:2]} == {0}
    text = (tmp_path / "tmp" / "tmp.log").read_text(encoding="utf-8")
    assert text.startswith(expected[0] + expected[1])
    assert text.endswith("\nits own formatter\n")  # what that handler writes


@pytest.mark.timeout(60)
def test_a_message_that_does_not_format_is_reported_not_shipped(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = str(tmp_path / "tmp.log")
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"bad-{name}", log_file=log_file)
        logger.info("needs %d numbers %d", 1)  # noqa: PLE1206 (logging reports it on stderr)
        logger.info("fine")
        assert session.flush()
    err = capsys.readouterr().err
    assert "not enough arguments for format string" in err
    lines = (tmp_path / "tmp" / "tmp.log").read_text(encoding="utf-8").splitlines()
    assert [line.split(" - ", 3)[3] for line in lines] == ["fine"]


def test_every_entry_kind_round_trips_through_the_codec_and_nothing_else_decodes() -> None:
    from shmlog.wire import (
        LogLine,
        LogRecordData,
        Progress,
        ProgressMarker,
        encode_line,
        encode_progress,
        encode_record,
    )

    line = decode_entry(encode_line(1.5, logging.INFO, "text\n", 2, "route"))
    assert type(line) is LogLine and (line.created, line.text, line.rank) == (1.5, "text\n", 2)
    record = decode_entry(encode_record(2.5, 30, "WARNING", "n", "m", "p.py", "f", 7, None, None,
                                  1, 3, 99, "route"))
    assert type(record) is LogRecordData
    assert (record.levelname, record.worker, record.pid, record.route) == ("WARNING", 3, 99, "route")
    progress = Progress("train", 1, 2, 0, None, None, None, "iter", 123)
    marker = decode_entry(encode_progress(3.5, progress))
    assert type(marker) is ProgressMarker and Progress._make(marker.progress) == progress
    computed = progress._replace(reduced={"values": {"loss": 2.0}}, computed={"loss_p90": 1.5})
    carried = Progress._make(decode_entry(encode_progress(4.5, computed)).progress)
    assert (carried.reduced, carried.computed) == ({"values": {"loss": 2.0}}, {"loss_p90": 1.5})
    for bad in [(1.0,), (1.0, 9, "x"), (1.0, 2, 20, "x", 0), [1.0, 2, 20, "x", 0, "r"],
                (1.0, "2", 20, "x", 0, "r"), "text"]:
        with pytest.raises(ValueError, match="not a record ring entry"):
            decode_entry(bad)

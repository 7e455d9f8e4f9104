"""MMLogger, print_log, the formatter and the log file layout in one process."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import re
import sys
import time
import types
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from shmlog import MMLogger, print_log
from shmlog.api import process as dist
from shmlog.format.files import build_file_handler, log_file_for_rank, master_log_file
from shmlog.format.formatter import (
    FILE_DATEFMT,
    DuplicateWarningFilter,
    MMFormatter,
    TerminalHandler,
    stream_supports_colour,
)

# MMEngine 0.10.7's output for: log_level DEBUG, log_file given, a debug, an
# info, the same warning twice and an error (from the project's golden file).
GOLDEN_TERMINAL = [
    "11/25 11:47:19 - mmengine - DEBUG - a debug line",
    "11/25 11:47:19 - mmengine - INFO - an info line",
    "11/25 11:47:19 - mmengine - WARNING - a warning line",
    "11/25 11:47:19 - mmengine - ERROR - /path/to/script.py - <module> - 4 - an error line",
]
GOLDEN_FILE = [
    "2026/11/25 11:47:19 - mmengine - DEBUG - a debug line",
    "2026/11/25 11:47:19 - mmengine - INFO - an info line",
    "2026/11/25 11:47:19 - mmengine - WARNING - a warning line",
    "2026/11/25 11:47:19 - mmengine - ERROR - /path/to/script.py - <module> - 4 - an error line",
]
GOLDEN_LOCATION = "/path/to/script.py - <module> - 4"
TERMINAL_TIME = re.compile(r"^(\d\d/\d\d \d\d:\d\d:\d\d)( - .*)$")
FILE_TIME = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)( - .*)$")

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NO_COLOR", "FORCE_COLOR",
            "ANSI_COLORS_DISABLED")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def clean_loggers(monkeypatch: pytest.MonkeyPatch):
    """Start each test with no MMLogger and a single-process env; close what it made."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    saved = OrderedDict(MMLogger._instance_dict)
    MMLogger._instance_dict.clear()
    yield
    for logger in MMLogger._instance_dict.values():
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
    MMLogger._instance_dict.clear()
    MMLogger._instance_dict.update(saved)


def capture(logger: MMLogger, stream: io.StringIO | None = None) -> io.StringIO:
    """Point the logger's terminal handler at a StringIO and return it."""
    stream = io.StringIO() if stream is None else stream
    handlers = [h for h in logger.handlers if isinstance(h, TerminalHandler)]
    assert len(handlers) == 1
    handlers[0].setStream(stream)
    return stream


def lines(text: str) -> list[str]:
    return text.splitlines()


def file_handlers(logger: logging.Logger) -> list[logging.FileHandler]:
    return [h for h in logger.handlers if isinstance(h, logging.FileHandler)]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def set_dist(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world_size))


def assert_like_golden(actual: list[str], golden: list[str], time_re: re.Pattern[str],
                       location: str) -> None:
    assert len(actual) == len(golden), actual
    for got, want in zip(actual, golden):
        got_m, want_m = time_re.match(got), time_re.match(want)
        assert got_m is not None, got
        assert want_m is not None, want
        assert got_m.group(2) == want_m.group(2).replace(GOLDEN_LOCATION, location)


# -- the golden file itself ------------------------------------------------------


def _golden_path() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "shared", Path("/work/shared")):
        path = candidate / "golden" / "mmengine-0.10.7-formats.txt"
        if path.is_file():
            return path
    return None


def test_embedded_golden_lines_match_the_golden_file() -> None:
    path = _golden_path()
    if path is None:
        pytest.skip("golden file not available")
    text = path.read_text()
    section = text.split("## MMLogger", 1)[1].split("\n## ", 1)[0]
    terminal = section.split("terminal", 1)[1].split("file:", 1)[0]
    file_part = section.split("file:", 1)[1]
    assert [ln.strip() for ln in terminal.splitlines()[1:] if ln.strip()] == GOLDEN_TERMINAL
    assert [ln.strip() for ln in file_part.splitlines() if ln.strip()] == GOLDEN_FILE


# -- formats -------------------------------------------------------------------------


def test_terminal_and_file_lines_match_mmengine(tmp_path: Path) -> None:
    logger = MMLogger.get_instance("golden", log_file=str(tmp_path / "tmp.log"),
                                   log_level="DEBUG")
    out = capture(logger)
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    logger.warning("a warning line")
    error_line = sys._getframe().f_lineno + 1
    logger.error("an error line")
    location = f"{__file__} - test_terminal_and_file_lines_match_mmengine - {error_line}"

    assert "\x1b[" not in out.getvalue()
    assert_like_golden(lines(out.getvalue()), GOLDEN_TERMINAL, TERMINAL_TIME, location)
    log_path = tmp_path / "tmp" / "tmp.log"
    assert logger.log_file == str(log_path)
    file_lines = lines(log_path.read_text())
    assert_like_golden(file_lines, GOLDEN_FILE, FILE_TIME, location)

    # The time is now, with the year in the file and without it on the terminal.
    stamp = datetime.strptime(FILE_TIME.match(file_lines[0]).group(1), "%Y/%m/%d %H:%M:%S")
    assert abs(datetime.now() - stamp) < timedelta(minutes=5)
    short = TERMINAL_TIME.match(lines(out.getvalue())[0]).group(1)
    assert short == stamp.strftime("%m/%d %H:%M:%S")


def test_terminal_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    logger = MMLogger.get_instance("stdout")
    logger.info("hello %s", "world")
    captured = capsys.readouterr()
    assert re.fullmatch(r"\d\d/\d\d \d\d:\d\d:\d\d - mmengine - INFO - hello world\n",
                        captured.out)
    assert captured.err == ""


def test_error_line_names_path_function_and_line(tmp_path: Path) -> None:
    logger = MMLogger.get_instance("err", logger_name="custom",
                                   log_file=tmp_path / "run.log")
    out = capture(logger)
    line = sys._getframe().f_lineno + 1
    logger.error("division by zero")
    expected = (f" - custom - ERROR - {__file__} - "
                f"test_error_line_names_path_function_and_line - {line} - division by zero")
    assert lines(out.getvalue())[0][len("MM/DD HH:MM:SS"):] == expected
    assert (tmp_path / "run" / "run.log").read_text().splitlines()[0][
        len("YYYY/MM/DD HH:MM:SS"):] == expected


def test_critical_and_exceptions_use_the_error_layout(tmp_path: Path) -> None:
    logger = MMLogger.get_instance("crit")
    out = capture(logger)
    logger.critical("on fire")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logger.exception("failed")
    text = out.getvalue()
    first, second = text.split("\n", 1)
    assert re.search(r" - mmengine - CRITICAL - .*test_logger\.py - "
                     r"test_critical_and_exceptions_use_the_error_layout - \d+ - on fire$", first)
    assert " - ERROR - " in second and second.splitlines()[0].endswith(" - failed")
    assert "Traceback (most recent call last):" in second
    assert second.rstrip().endswith("ZeroDivisionError: boom")


def test_level_is_coloured_on_a_tty_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    logger = MMLogger.get_instance("colour", log_level="DEBUG")
    tty = capture(logger, FakeTTY())
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    got = lines(tty.getvalue())
    # termcolor's codes as MMEngine 0.10.7 emits them: underline, WARNING and
    # ERROR also blink; green, bright white, yellow, red.
    assert " - \x1b[4m\x1b[32mDEBUG\x1b[0m - d" in got[0]
    assert " - \x1b[4m\x1b[97mINFO\x1b[0m - i" in got[1]
    assert " - \x1b[5m\x1b[4m\x1b[33mWARNING\x1b[0m - w" in got[2]
    assert " - \x1b[5m\x1b[4m\x1b[31mERROR\x1b[0m - " in got[3]

    plain = capture(logger)  # the same handler, now on a non-TTY stream
    logger.info("i")
    assert "\x1b" not in plain.getvalue()
    assert " - INFO - i" in plain.getvalue()


def test_colour_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    assert stream_supports_colour(FakeTTY())
    assert not stream_supports_colour(io.StringIO())
    assert not stream_supports_colour(object())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert stream_supports_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not stream_supports_colour(FakeTTY())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not stream_supports_colour(FakeTTY())
    monkeypatch.delenv("TERM")
    closed = io.StringIO()
    closed.close()  # its isatty() raises ValueError
    assert not stream_supports_colour(closed)


def test_file_is_never_coloured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    logger = MMLogger.get_instance("nocolour", log_file=tmp_path / "a.log")
    tty = capture(logger, FakeTTY())
    logger.warning("w")
    assert "\x1b[" in tty.getvalue()
    assert "\x1b" not in (tmp_path / "a" / "a.log").read_text()


def test_formatter_formats_a_record_built_from_plain_data() -> None:
    created = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
    data = {"name": "remote", "levelno": logging.ERROR, "levelname": "ERROR", "msg": "lost %d",
                "args": (3,), "pathname": "/src/train.py", "funcName": "step", "lineno": 42,
                "created": created}
    record = logging.makeLogRecord(data)
    assert MMFormatter(color=False).format(record) == (
        "03/04 05:06:07 - remote - ERROR - /src/train.py - step - 42 - lost 3")
    assert MMFormatter(color=False, datefmt=FILE_DATEFMT).format(record) == (
        "2026/03/04 05:06:07 - remote - ERROR - /src/train.py - step - 42 - lost 3")
    info = logging.makeLogRecord({**data, "levelno": logging.INFO, "levelname": "INFO"})
    assert MMFormatter(color=False).format(info) == "03/04 05:06:07 - remote - INFO - lost 3"
    assert MMFormatter(color=True).format(info) == (
        "03/04 05:06:07 - remote - \x1b[4m\x1b[97mINFO\x1b[0m - lost 3")
    assert MMFormatter(color=True, blink=True).format(info) == (
        "03/04 05:06:07 - remote - \x1b[5m\x1b[4m\x1b[97mINFO\x1b[0m - lost 3")
    # A record whose traceback was already rendered by the sender.
    shipped = logging.makeLogRecord({**data, "exc_text": "Traceback ...\nValueError: x"})
    assert MMFormatter(color=False).format(shipped).endswith(
        "lost 3\nTraceback ...\nValueError: x")
    with pytest.raises(ValueError, match="blink"):
        MMFormatter(color=False, blink=True)


# -- warning de-duplication ----------------------------------------------------------


def test_each_distinct_warning_prints_once(tmp_path: Path) -> None:
    logger = MMLogger.get_instance("dedup", log_file=tmp_path / "d.log")
    out = capture(logger)
    for _ in range(3):
        logger.warning("same")
    logger.warning("other")
    logger.warning("value %d", 1)
    logger.warning("value %d", 2)
    logger.warning("value %d", 1)
    logger.error("bad")
    logger.error("bad")
    logger.info("info")
    logger.info("info")
    expected = ["WARNING - same", "WARNING - other", "WARNING - value 1",
                "WARNING - value 2", "ERROR", "ERROR", "INFO - info", "INFO - info"]
    for text in (out.getvalue(), (tmp_path / "d" / "d.log").read_text()):
        got = [ln.split(" - mmengine - ", 1)[1] for ln in lines(text)]
        assert len(got) == len(expected)
        for line, want in zip(got, expected):
            assert line.startswith(want)


@pytest.mark.timeout(60)
def test_in_a_session_the_log_writer_lets_each_distinct_warning_through_once(
    tmp_path: Path, name: str
) -> None:
    import shmlog

    with shmlog.init(name, log_file=tmp_path / "d.log") as session:
        logger = MMLogger.get_instance("dedup-session", log_file=tmp_path / "d.log")
        for _ in range(3):
            logger.warning("same")
        logger.warning("value %d", 1)
        logger.warning("value %d", 2)
        logger.warning("value %d", 1)
        logger.error("bad")
        logger.error("bad")
        assert session.flush(timeout=30)
    got = [ln.split(" - mmengine - ", 1)[1]
           for ln in lines((tmp_path / "d" / "d.log").read_text())]
    assert [line.split(" - ")[0:2] for line in got] == [
        ["WARNING", "same"], ["WARNING", "value 1"], ["WARNING", "value 2"],
        ["ERROR", got[3].split(" - ")[1]], ["ERROR", got[4].split(" - ")[1]]]
    assert got[3].endswith(" - bad") and got[4].endswith(" - bad")


def test_duplicate_filter_is_per_filter_instance() -> None:
    record = logging.makeLogRecord({"levelno": logging.WARNING, "msg": "x"})
    first, second = DuplicateWarningFilter(), DuplicateWarningFilter()
    assert first.filter(record) and not first.filter(record)
    assert second.filter(record)


# -- file layout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "world_size", "distributed", "level", "expected"),
    [
        (0, 1, False, "INFO", "tmp/tmp.log"),
        (0, 1, True, "INFO", "tmp/tmp.log"),
        (0, 4, False, "INFO", "tmp/tmp.log"),
        (0, 4, True, "INFO", "tmp/tmp.log"),
        (1, 4, False, "INFO", None),
        (1, 4, True, "INFO", "tmp/tmp_rank1.log"),
        (1, 4, False, "DEBUG", "tmp/tmp_rank1.log"),
        (3, 4, True, "WARNING", "tmp/tmp_rank3.log"),
        (1, 1, True, "INFO", None),  # RANK without a world: nothing per rank
    ],
)
def test_log_file_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int,
                         world_size: int, distributed: bool, level: str,
                         expected: str | None) -> None:
    set_dist(monkeypatch, rank, world_size)
    work = tmp_path / "work"
    logger = MMLogger.get_instance("layout", log_file=str(work / "tmp.log"),
                                   log_level=level, distributed=distributed)
    capture(logger)
    logger.error("written")
    handlers = file_handlers(logger)
    if expected is None:
        assert handlers == []
        assert not work.exists()
        assert logger.log_file == str(work / "tmp" / "tmp.log")
    else:
        assert len(handlers) == 1
        assert listing(work) == sorted(["tmp", expected])
        assert logger.log_file == str(work / expected)
        assert "written" in (work / expected).read_text()


@pytest.mark.parametrize(("rank", "expected"), [(0, "20240101_000000.log"),
                                              (2, "20240101_000000_rank2.log")])
def test_a_log_file_already_in_its_own_directory_stays_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int, expected: str
) -> None:
    """MMEngine's Runner passes work_dir/<ts>/<ts>.log: the files go into <ts>/, no deeper."""
    set_dist(monkeypatch, rank, 4)
    run = tmp_path / "work" / "20240101_000000"
    logger = MMLogger.get_instance("runner-layout", log_file=str(run / "20240101_000000.log"),
                                   distributed=True)
    capture(logger)
    logger.error("written")
    assert listing(tmp_path / "work") == ["20240101_000000", f"20240101_000000/{expected}"]
    assert logger.log_file == str(run / expected)
    # The same stem under another directory still gets its own directory.
    assert master_log_file("work/other/tmp.log") == os.path.join("work", "other", "tmp", "tmp.log")
    assert master_log_file("tmp/tmp.log") == os.path.join("tmp", "tmp.log")
    assert master_log_file("tmp/tmp.log", per_node=True) == os.path.join("tmp", "tmp_logs",
                                                                          "tmp.log")


def test_the_logger_module_functions_are_what_mmlogger_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing ``_get_rank``/``_get_world_size`` of the logger module changes the next logger."""
    from shmlog.api import logger as logger_module

    monkeypatch.setattr(logger_module, "_get_rank", lambda: 1)
    monkeypatch.setattr(logger_module, "_get_world_size", lambda: 2)
    quiet = MMLogger.get_instance("patched-rank", log_file=str(tmp_path / "r.log"))
    assert file_handlers(quiet) == []  # rank 1, not distributed: no file of its own
    assert quiet.handlers[0].level == logging.ERROR
    own = MMLogger.get_instance("patched-dist", log_file=str(tmp_path / "r.log"), distributed=True)
    (handler,) = file_handlers(own)
    assert handler.baseFilename == str(tmp_path / "r" / "r_rank1.log")


def test_device_id_and_host_info(monkeypatch: pytest.MonkeyPatch) -> None:
    from shmlog.api import logger as logger_module

    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,5,7")
    fake_cuda = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 4)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))
    assert logger_module._get_device_id() == 2  # no CUDA: the local rank
    fake_cuda.is_available = lambda: True
    assert logger_module._get_device_id() == 5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,MIG-abc")
    assert logger_module._get_device_id() == "MIG-abc"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert logger_module._get_device_id() == 2  # range(device_count())
    user_host = logger_module._get_host_info()
    assert user_host == "" or user_host.count("@") == 1


def test_layout_functions_without_a_logger(tmp_path: Path) -> None:
    assert master_log_file("work/tmp.log") == os.path.join("work", "tmp", "tmp.log")
    assert log_file_for_rank("work/tmp.log", 0, 4) == master_log_file("work/tmp.log")
    assert master_log_file("tmp.log") == os.path.join("tmp", "tmp.log")
    assert master_log_file(Path("a/run")) == os.path.join("a", "run", "run")
    assert log_file_for_rank("w/x.txt", 2, 4, distributed=True) == os.path.join(
        "w", "x", "x_rank2.txt")
    assert log_file_for_rank("w/x.txt", 2, 4) is None
    assert log_file_for_rank("w/x.txt", 2, 4, log_level=logging.DEBUG) is not None
    for bad in ("work/", ""):
        with pytest.raises(ValueError, match="log_file"):
            master_log_file(bad)

    handler = build_file_handler(tmp_path / "r.log", 5, 8, distributed=True, mode="a")
    try:
        assert handler is not None
        assert handler.baseFilename == str(tmp_path / "r" / "r_rank5.log")
        assert handler.mode == "a"
        assert handler.level == logging.INFO
        handler.handle(logging.makeLogRecord(
            {"name": "n", "levelno": logging.INFO, "levelname": "INFO", "msg": "m"}))
    finally:
        if handler is not None:
            handler.close()
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d - n - INFO - m\n",
                        (tmp_path / "r" / "r_rank5.log").read_text())
    assert build_file_handler(tmp_path / "q.log", 5, 8) is None
    assert not (tmp_path / "q").exists()


def test_log_file_is_absolute_on_every_rank(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    writer = MMLogger.get_instance("writer", log_file="rel.log")
    assert writer.log_file == str(tmp_path / "rel" / "rel.log")
    set_dist(monkeypatch, 1, 2)
    reader = MMLogger.get_instance("silent-rank", log_file="rel.log")
    assert reader.log_file == writer.log_file
    assert file_handlers(reader) == []


def test_file_mode_append_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m" / "m.log"

    def run(name: str, mode: str) -> None:
        logger = MMLogger.get_instance(name, log_file=tmp_path / "m.log", file_mode=mode)
        capture(logger)
        logger.info(name)
        for handler in file_handlers(logger):
            handler.close()

    run("first", "w")
    run("second", "a")
    assert [ln.rsplit(" - ", 1)[1] for ln in lines(path.read_text())] == ["first", "second"]
    run("third", "w")
    assert [ln.rsplit(" - ", 1)[1] for ln in lines(path.read_text())] == ["third"]


# -- ranks other than 0 ----------------------------------------------------------------


def test_other_ranks_print_only_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_dist(monkeypatch, 1, 2)
    logger = MMLogger.get_instance("rank1", log_file=tmp_path / "t.log", distributed=True,
                                   log_level="DEBUG")
    out = capture(logger)
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    assert [ln.split(" - ")[2] for ln in lines(out.getvalue())] == ["ERROR", "CRITICAL"]
    # Its own file still gets everything at log_level.
    file_text = (tmp_path / "t" / "t_rank1.log").read_text()
    assert [ln.split(" - ")[2] for ln in lines(file_text)] == [
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def test_rank_zero_prints_everything_at_its_level(monkeypatch: pytest.MonkeyPatch) -> None:
    set_dist(monkeypatch, 0, 2)
    logger = MMLogger.get_instance("rank0")
    out = capture(logger)
    logger.debug("d")
    logger.info("i")
    assert [ln.split(" - ")[2] for ln in lines(out.getvalue())] == ["INFO"]


# -- setLevel -----------------------------------------------------------------------------


def test_set_level_applies_to_its_handlers(tmp_path: Path) -> None:
    logger = MMLogger.get_instance("lvl", log_file=tmp_path / "l.log")
    out = capture(logger)
    logger.info("shown")  # fills isEnabledFor's cache for INFO
    logger.setLevel("WARNING")
    logger.info("hidden")
    logger.warning("warned")
    logger.setLevel(logging.DEBUG)
    logger.debug("debug now shown")
    with pytest.raises(ValueError, match="level"):
        logger.setLevel("LOUD")
    expected = ["shown", "warned", "debug now shown"]
    assert [ln.rsplit(" - ", 1)[1] for ln in lines(out.getvalue())] == expected
    file_text = (tmp_path / "l" / "l.log").read_text()
    assert [ln.rsplit(" - ", 1)[1] for ln in lines(file_text)] == expected
    assert logger.level == logging.DEBUG


def test_set_level_clears_every_instance_cache() -> None:
    first = MMLogger.get_instance("first")
    second = MMLogger.get_instance("second")
    first.info("x")
    capture(first)
    assert first._cache
    second.setLevel("ERROR")
    assert first._cache == {}


def test_set_level_keeps_other_ranks_terminal_at_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_dist(monkeypatch, 2, 4)
    logger = MMLogger.get_instance("r2")
    out = capture(logger)
    logger.setLevel("DEBUG")
    logger.info("hidden")
    logger.error("shown")
    assert [ln.rsplit(" - ", 1)[1] for ln in lines(out.getvalue())] == ["shown"]


def test_handlers_added_by_the_user_keep_their_level() -> None:
    logger = MMLogger.get_instance("extra")
    capture(logger)
    extra = logging.StreamHandler(io.StringIO())
    extra.setLevel(logging.ERROR)
    logger.addHandler(extra)
    logger.setLevel("DEBUG")
    assert extra.level == logging.ERROR


# -- file_handler_cfg ---------------------------------------------------------------------


def test_rotating_file_handler(tmp_path: Path) -> None:
    cfg = {"type": "RotatingFileHandler", "maxBytes": 200, "backupCount": 2}
    logger = MMLogger.get_instance("rot", log_file=tmp_path / "rot.log", file_handler_cfg=cfg)
    capture(logger)
    (handler,) = file_handlers(logger)
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert handler.maxBytes == 200 and handler.backupCount == 2
    for i in range(20):
        logger.info("line %03d %s", i, "x" * 40)
    names = sorted(p.name for p in (tmp_path / "rot").iterdir())
    assert names == ["rot.log", "rot.log.1", "rot.log.2"]
    assert cfg == {"type": "RotatingFileHandler", "maxBytes": 200, "backupCount": 2}
    assert "line 019" in (tmp_path / "rot" / "rot.log").read_text()


@pytest.mark.parametrize("name", ["TimedRotatingFileHandler", "WatchedFileHandler",
                                  "FileHandler", "BaseRotatingHandler"])
def test_other_file_handler_types(tmp_path: Path, name: str) -> None:
    """The handler in ``logger.handlers`` is an instance of the class the config names."""
    cfg = {"type": name, **({"mode": "a"} if name == "BaseRotatingHandler" else {})}
    logger = MMLogger.get_instance(name, log_file=tmp_path / "h.log", file_handler_cfg=cfg)
    capture(logger)
    (handler,) = file_handlers(logger)
    assert isinstance(handler, getattr(logging.handlers, name, logging.FileHandler))
    assert logger.handlers[-1] is handler
    if name == "BaseRotatingHandler":
        return  # it cannot write: it has no rule for when to roll over
    logger.info("written")
    assert "written" in (tmp_path / "h" / "h.log").read_text()


# -- bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"log_level": "info"}, ValueError, ["log_level", "'info'", "'INFO'"]),
        ({"log_level": "LOUD"}, ValueError, ["log_level", "'LOUD'"]),
        ({"log_level": 1.5}, TypeError, ["log_level", "float"]),
        ({"log_level": -1}, ValueError, ["log_level", "-1"]),
        ({"file_mode": "r"}, ValueError, ["file_mode", "'r'", "'a'"]),
        ({"file_mode": "wb"}, ValueError, ["file_mode", "'wb'"]),
        ({"file_mode": None}, TypeError, ["file_mode", "None"]),
        ({"file_handler_cfg": {"type": "Nope"}}, ValueError,
         ["file_handler_cfg", "'Nope'", "RotatingFileHandler"]),
        ({"file_handler_cfg": {"type": "BaseRotatingHandler"}}, TypeError,
         ["'BaseRotatingHandler'", "mode"]),
        ({"file_handler_cfg": {"maxBytes": 1}}, ValueError, ["file_handler_cfg", "'type'"]),
        ({"file_handler_cfg": "RotatingFileHandler"}, TypeError,
         ["file_handler_cfg", "str"]),
        ({"file_handler_cfg": {"type": "RotatingFileHandler", "maxbytes": 1}}, TypeError,
         ["file_handler_cfg", "RotatingFileHandler", "maxbytes"]),
        ({"file_handler_cfg": {"type": "FileHandler", "filename": "x.log"}}, ValueError,
         ["file_handler_cfg", "filename"]),
        ({"logger_name": 3}, TypeError, ["logger_name", "int"]),
        ({"distributed": "yes"}, TypeError, ["distributed", "'yes'"]),
        ({"log_file": 3}, TypeError, ["log_file", "int"]),
        ({"log_file": "work/"}, ValueError, ["log_file", "'work/'"]),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 kwargs: dict, error: type, words: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    kwargs = {"log_file": "bad.log", **kwargs}
    with pytest.raises(error) as info:
        MMLogger.get_instance("bad", **kwargs)
    for word in words:
        assert word in str(info.value)
    assert not MMLogger.check_instance_created("bad")
    assert list(tmp_path.iterdir()) == []  # nothing created on disk


def test_bad_rank_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two'"):
        MMLogger.get_instance("env")
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE='0'.*>= 1"):
        dist.get_world_size()
    monkeypatch.setenv("RANK", "-1")
    with pytest.raises(ValueError, match=r"RANK='-1'"):
        dist.get_rank()


# -- print_log ------------------------------------------------------------------------------


def test_print_log_none_and_silent(capsys: pytest.CaptureFixture[str]) -> None:
    print_log("plain", logger=None)
    print_log("quiet", logger="silent")
    assert capsys.readouterr().out == "plain\n"
    assert not MMLogger._instance_dict  # neither created a logger


def test_print_log_to_a_logging_logger() -> None:
    plain = logging.getLogger("shmlog-tests.print-log")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(funcName)s %(message)s"))
    plain.addHandler(handler)
    plain.setLevel(logging.INFO)
    plain.propagate = False
    try:
        print_log("to plain", logger=plain, level=logging.WARNING)
        print_log("dropped", logger=plain, level=logging.DEBUG)
    finally:
        plain.removeHandler(handler)
    # The caller of print_log is reported, not print_log itself.
    assert stream.getvalue() == "WARNING test_print_log_to_a_logging_logger to plain\n"


def test_print_log_to_mmlogger_by_object_name_and_current() -> None:
    first = MMLogger.get_instance("first", logger_name="one")
    second = MMLogger.get_instance("second", logger_name="two")
    out1, out2 = capture(first), capture(second)
    print_log("by object", logger=first)
    print_log("by name", logger="first", level=logging.WARNING)
    print_log("by current", logger="current", level="ERROR")
    print_log("below level", logger="second", level=logging.DEBUG)
    got1 = [ln.split(" - ", 1)[1] for ln in lines(out1.getvalue())]
    assert got1 == ["one - INFO - by object", "one - WARNING - by name"]
    (line,) = lines(out2.getvalue())
    assert line.split(" - ", 1)[1].startswith("two - ERROR - ")
    assert f" - {__file__} - test_print_log_to_mmlogger_by_object_name_and_current - " in line
    assert line.endswith(" - by current")


def test_print_log_current_creates_the_default_logger(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_log("first message", logger="current")
    assert list(MMLogger._instance_dict) == ["mmengine"]
    assert capsys.readouterr().out.endswith(" - mmengine - INFO - first message\n")


def test_print_log_errors() -> None:
    with pytest.raises(ValueError, match=r"MMLogger: 'missing' has not been created"):
        print_log("x", logger="missing")
    with pytest.raises(TypeError, match=r"logging\.Logger, got int$"):
        print_log("x", logger=3)  # type: ignore[arg-type]
    MMLogger.get_instance("exists")
    with pytest.raises(ValueError, match=r"level: unknown level name 'LOUD'"):
        print_log("x", logger="exists", level="LOUD")
    assert not MMLogger.check_instance_created("missing")


# -- instances -------------------------------------------------------------------------------


def test_get_current_instance() -> None:
    default = MMLogger.get_current_instance()
    assert default.instance_name == "mmengine" and default.name == "mmengine"
    assert MMLogger.get_current_instance() is default
    named = MMLogger.get_instance("task", logger_name="visible")
    assert MMLogger.get_current_instance() is named
    assert named.name == "visible" and named.instance_name == "task"
    assert MMLogger.get_instance("task") is named
    assert isinstance(named, logging.Logger)
    assert logging.getLogger("visible") is not named


def test_independent_of_root_logger_configuration() -> None:
    root = logging.getLogger()
    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    old_level = root.level
    root.addHandler(root_handler)
    root.setLevel(logging.CRITICAL)
    try:
        logger = MMLogger.get_instance("alone")
        out = capture(logger)
        logger.info("mine")
        logger.error("also mine")
    finally:
        root.removeHandler(root_handler)
        root.setLevel(old_level)
    assert root_stream.getvalue() == ""
    assert len(lines(out.getvalue())) == 2
    assert logger.propagate is False


def test_no_handlers_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    logger = MMLogger.get_instance("bare")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.error("nowhere")  # no logging.lastResort fallback
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- rank detection ----------------------------------------------------------------------------


def test_rank_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (3, 8, 1)


def test_rank_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "torch.distributed", raising=False)
    dist.get_rank()
    dist.get_world_size()
    assert "torch" not in sys.modules


def test_rank_from_an_initialised_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist = types.ModuleType("torch.distributed")
    state = {"initialised": False}
    fake_dist.is_available = lambda: True  # type: ignore[attr-defined]
    fake_dist.is_initialized = lambda: state["initialised"]  # type: ignore[attr-defined]
    fake_dist.get_rank = lambda: 5  # type: ignore[attr-defined]
    fake_dist.get_world_size = lambda: 6  # type: ignore[attr-defined]
    fake_torch = types.ModuleType("torch")
    fake_torch.distributed = fake_dist  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch.distributed", fake_dist)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (dist.get_rank(), dist.get_world_size()) == (1, 2)  # not initialised: env
    state["initialised"] = True
    assert (dist.get_rank(), dist.get_world_size()) == (5, 6)

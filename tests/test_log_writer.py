"""The designated log writer: one process writes every rank's and worker's log files.

Ranks are independent programs joined by session name, workers are fork and
spawn children; their MMLogger records travel through record rings to the
writer, which must produce the seed's file layout, keep each source's order,
survive being killed, report what a full ring made it drop, and write the
LogProcessor lines and exported scalars a training loop asks for.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import select
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest
from _shared_workers import child_env, unique_name
from _writer_workers import (
    TIMEOUT,
    Rank,
    log_as_worker,
    messages_of,
    numbered,
    read_log,
    start_ranks,
    strip_date,
)

import shmlog
from shmlog import LogProcessor, MessageHub, MMLogger
from shmlog.shm.liveness import process_start
from shmlog.wire import Progress, encode_line, encode_progress

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
DROPPED = re.compile(r"^shmlog: (\d+) log record\(s\) from (\S+) were dropped\b")

pytestmark = pytest.mark.usefixtures("single_process_env")


@pytest.fixture
def name() -> str:
    return unique_name("lw")



def alive(pid: int) -> bool:
    return pid > 0 and process_start(pid) is not None


def wait_gone(pid: int, timeout: float = TIMEOUT) -> bool:
    """Wait until process ``pid`` (not necessarily our child) has exited."""
    if pid <= 0:
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # A pidfd becomes readable when the process terminates (zombies included).
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def finish_all(ranks: list[Rank], command: str | None = "close") -> list[int]:
    """Close every rank's session in order, then let each exit; returns the exit codes."""
    try:
        if command == "close":
            for rank in ranks:
                rank.ask("close", "closed")
            return [rank.finish() for rank in ranks]
        return [rank.finish(command) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()


def rank_file(directory: Path, rank: int) -> Path:
    return directory / ("tmp.log" if rank == 0 else f"tmp_rank{rank}.log")


def assert_in_order(numbers: list[int], expected: int, duplicates: int = 0) -> None:
    """``numbers`` is 0..expected-1 in order, with at most ``duplicates`` lines repeated.

    A writer killed after writing a record but before marking it consumed
    leaves its successor to write that record again, right away: a repeated
    line follows its first copy directly.
    """
    once = [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1]]
    assert len(numbers) - len(once) <= duplicates, Counter(numbers).most_common(3)
    assert once == list(range(expected)), (
        f"missing: {sorted(set(range(expected)) - set(numbers))[:20]}"
    )


# -- the seed's layout from independent ranks -----------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("distributed", [True, False], ids=["distributed", "master-only"])
def test_three_ranks_write_the_seed_layout(tmp_path: Path, name: str, distributed: bool) -> None:
    """tmp/tmp.log, tmp/tmp_rank1.log, tmp/tmp_rank2.log; only tmp.log without distributed."""
    log_file = tmp_path / "tmp.log"
    cfg = {"name": name, "log_file": str(log_file), "instance": f"ranks-{name}",
           "distributed": distributed}
    ranks = start_ranks(3, cfg, tmp_path)
    try:
        for rank in ranks:
            rank.send("log 0 300")
        for rank in ranks:
            rank.expect("logged")
        assert ranks[1].ask("flush", "flushed") == ["True"]
        writer = int(ranks[2].ask("writer", "writer")[0])
    finally:
        codes = finish_all(ranks)
    assert codes == [0, 0, 0], [r.stderr() for r in ranks]
    assert wait_gone(writer), "the sidecar outlived the session"

    directory = tmp_path / "tmp"
    expected = ["tmp.log", "tmp_rank1.log", "tmp_rank2.log"] if distributed else ["tmp.log"]
    assert sorted(os.listdir(tmp_path)) == sorted(["tmp", *(f"rank{r}.stderr" for r in range(3))])
    assert sorted(os.listdir(directory)) == expected
    for rank in range(3 if distributed else 1):
        messages = messages_of(rank_file(directory, rank))
        assert numbered(messages, f"rank{rank}") == list(range(300))
        assert len(messages) == 300, [m for m in messages if not m.startswith(f"rank{rank} ")]
    for rank in ranks:
        assert rank.stderr_path.read_text() == ""


# -- DataLoader-style workers ------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_records_land_in_rank0_file_marked(tmp_path: Path, name: str, method: str) -> None:
    """Fork and spawn children's lines go to rank 0's file as ``[worker<id>] ...``, in order."""
    log_file = str(tmp_path / "tmp.log")
    instance = f"workers-{name}"
    workers, count = 3, 200
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(instance, log_file=log_file)
        logger.info("main line 0")
        ctx = multiprocessing.get_context(method)
        children = [
            ctx.Process(target=log_as_worker, args=(instance, log_file, w, count))
            for w in range(workers)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(TIMEOUT)
        assert [c.exitcode for c in children] == [0] * workers
        logger.info("main line 1")
        assert session.flush()
        writer = session.writer_pid
    assert wait_gone(writer)

    assert os.listdir(tmp_path / "tmp") == ["tmp.log"]
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert len(messages) == 2 + workers * count
    for w in range(workers):
        prefix = f"[worker{w}] "
        mine = [m[len(prefix):] for m in messages if m.startswith(prefix)]
        assert mine == [f"worker{w} line {i}" for i in range(count)]
    # Across sources, records are written in the order they were made.
    assert messages[0] == "main line 0"
    assert messages[-1] == "main line 1"


# -- the writer killed ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_writer_killed_mid_run_loses_nothing(tmp_path: Path, name: str) -> None:
    """SIGKILL the writer while ranks log: a standby takes over; every line is there once
    (at most one twice per source) and ``writer_pid`` names the new, live writer."""
    log_file = tmp_path / "tmp.log"
    cfg = {"name": name, "log_file": str(log_file), "instance": f"kill-{name}",
           "distributed": True}
    ranks = start_ranks(3, cfg, tmp_path)
    batch = 400
    try:
        for rank in ranks:
            rank.ask("log 0 1", "logged")
        assert ranks[0].ask("flush", "flushed") == ["True"]  # the sidecar is up and draining
        killed = int(ranks[0].ask("writer", "writer")[0])
        assert alive(killed)

        for rank in ranks:
            rank.send(f"log 1 {batch}")
        os.kill(killed, signal.SIGKILL)  # while the ranks log and the writer writes
        for rank in ranks:
            rank.expect("logged")

        deadline = time.monotonic() + 5.0
        successor = killed
        while time.monotonic() < deadline:
            successor = int(ranks[1].ask("writer", "writer")[0])
            if successor not in (0, killed) and alive(successor):
                break
            time.sleep(0.02)
        assert successor not in (0, killed) and alive(successor), (killed, successor)
        assert int(ranks[2].ask("writer", "writer")[0]) == successor
        assert successor in {rank.pid for rank in ranks}  # a standby thread of a rank

        for rank in ranks:
            rank.send(f"log {1 + batch} {batch}")
        for rank in ranks:
            rank.expect("logged")
        assert ranks[0].ask("flush", "flushed") == ["True"]
    finally:
        codes = finish_all(ranks)
    assert codes == [0, 0, 0], [r.stderr() for r in ranks]

    directory = tmp_path / "tmp"
    assert sorted(os.listdir(directory)) == ["tmp.log", "tmp_rank1.log", "tmp_rank2.log"]
    for rank in range(3):
        numbers = numbered(messages_of(rank_file(directory, rank)), f"rank{rank}")
        assert_in_order(numbers, 1 + 2 * batch, duplicates=1)


# -- fairness between rings -------------------------------------------------------------------


def _marker(ring: int, created: float) -> tuple:
    """A progress marker as it crosses the ring, naming its ring in ``batch_idx``."""
    progress = Progress("train", ring, 0, 0, None, None, None, "iter", created)
    return encode_progress(created, progress)


class _Ring:
    """A record ring as the writer sees it, holding progress markers (no files involved)."""

    capacity = 1 << 30

    def __init__(self, writer: int, created: list[float]) -> None:
        self.slot = writer
        self.ident = f"fake{writer}"
        self.records = [_marker(writer, t) for t in created]
        self.cursor = self.committed = self.reported = 0

    def next(self):
        return self.records[self.cursor] if self.cursor < len(self.records) else None

    def take(self, limit: int, newest: float) -> tuple[list, list]:
        run, ends = [], []
        at = self.cursor
        while at < len(self.records) and len(run) < limit:
            record = self.records[at]
            if run and not record[0] <= newest:
                break
            run.append(record)
            at += 1
            ends.append(at)
        return run, ends

    def unread(self) -> bool:
        return self.cursor < len(self.records)

    def pending(self) -> int:
        return len(self.records) - self.committed

    def consumed_in_ring(self) -> int:
        return self.committed

    def reported_in_ring(self) -> int:
        return self.reported

    def commit(self) -> None:
        self.committed = self.cursor

    def rewind(self, consumed: int, reported: int) -> None:
        self.cursor = self.committed = consumed
        self.reported = reported

    def unreported_drops(self) -> int:
        return 0


class _Control:
    @staticmethod
    def slot(slot: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(rank=-1)


class _Segments:
    control = _Control()

    def __init__(self, rings: list[_Ring]) -> None:
        self.rings = rings
        self.info: dict[str, bytes] = {}

    def record_consumers(self) -> list[_Ring]:
        return list(self.rings)

    def info_get(self, key: str) -> bytes | None:
        return self.info.get(key)

    def info_set(self, key: str, payload: bytes) -> None:
        self.info[key] = payload


@pytest.mark.timeout(120)
def test_a_busy_ring_does_not_starve_one_that_was_empty() -> None:
    """A ring with nothing to write when a pass began gets its turn during the pass, in
    creation order, while other producers keep the pass going (else its producer blocks
    and then drops)."""
    from shmlog.writer.drain import REPOLL_RECORDS, LogWriter

    busy = _Ring(0, [float(i) for i in range(1000)])
    idle = _Ring(1, [])
    writer = LogWriter(_Segments([busy, idle]))
    written: list[dict] = []

    def on_progress(progress: Progress, rank: int) -> None:
        written.append({"ring": progress.batch_idx, "created": progress.at_ns})
        if len(written) == 100:  # the idle producer logs, while the pass goes on
            idle.records.append(_marker(1, 50.5))

    writer.on_progress = on_progress
    assert writer.drain() == 1001
    at = next(i for i, p in enumerate(written) if p["ring"] == 1)
    assert 100 <= at <= 100 + REPOLL_RECORDS
    assert [p["created"] for p in written if p["ring"] == 0] == [float(i) for i in range(1000)]


def test_records_of_several_rings_are_written_in_creation_order_runs_and_all() -> None:
    """Runs of one ring (a producer logging while the others wait for a CPU) and single
    records interleave; the writer puts them in creation order, each ring's in its own."""
    from shmlog.writer.drain import LogWriter

    rings = [_Ring(0, [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 20.0]),
             _Ring(1, [3.0, 4.0, 5.0, 6.0, 14.0]),
             _Ring(2, [7.0, 8.0, 9.0, 13.0, 15.0, 16.0, 17.0, 18.0, 19.0])]
    writer = LogWriter(_Segments(rings))
    written: list[tuple[int, float]] = []
    writer.on_progress = lambda progress, rank: written.append((progress.batch_idx,
                                                                 progress.at_ns))
    assert writer.drain() == 21
    assert [created for _ring, created in written] == [float(i) for i in range(21)]
    assert [ring for ring, created in written if created in (13.0, 14.0, 20.0)] == [2, 1, 0]


def test_records_made_within_the_merge_window_may_group_by_ring_but_never_further() -> None:
    """Two producers logging at once interleave finely; the writer takes each one's
    records made within MERGE_SECONDS of the other's oldest as one run, and no record is
    written before one made more than MERGE_SECONDS earlier."""
    from shmlog.writer.drain import MERGE_SECONDS, LogWriter

    step = MERGE_SECONDS / 10
    first = [2 * i * step for i in range(5)] + [1.0 + 2 * MERGE_SECONDS]
    second = [(2 * i + 1) * step for i in range(5)] + [1.0]
    writer = LogWriter(_Segments([_Ring(0, first), _Ring(1, second)]))
    written: list[tuple[int, float]] = []
    writer.on_progress = lambda progress, rank: written.append((progress.batch_idx,
                                                                 progress.at_ns))
    assert writer.drain() == 12
    assert [ring for ring, _created in written] == [0] * 5 + [1] * 6 + [0]  # runs, not a merge
    assert [created for ring, created in written if ring == 0] == first
    assert [created for ring, created in written if ring == 1] == second
    for at, (_ring, created) in enumerate(written):
        assert all(later >= created - MERGE_SECONDS for _, later in written[at:])


def test_a_commit_inside_a_run_holds_exactly_the_records_written(tmp_path: Path) -> None:
    """The first record for a file opens it, which commits: at that commit the ring's
    position is that record's, with the records before it in their file (else a
    successor would write them again, or skip this one)."""
    from shmlog.shm import codec
    from shmlog.wire import Route, route_id, route_key
    from shmlog.writer.drain import LogWriter

    routes = [Route(str(tmp_path / f"{stem}.log"), False, 1, "w", None, logging.INFO)
              for stem in ("one", "two")]
    ring = _Ring(0, [])
    segments = _Segments([ring])
    for route in routes:
        segments.info[route_key(route_id(route))] = codec.encode("log route", tuple(route))
    ring.records = [encode_line(float(i), logging.INFO, f"line {i}\n", 0, route_id(routes[i // 3]))
                    for i in range(6)]
    writer = LogWriter(segments)
    commits: list[tuple[int, dict[str, str]]] = []
    store = writer._commits.store

    def record(commit) -> None:
        on_disk = {}
        for stem in ("one", "two"):
            path = tmp_path / stem / f"{stem}.log"
            on_disk[stem] = path.read_text() if path.exists() else None
        commits.append((ring.cursor, on_disk))
        store(commit)

    writer._commits.store = record
    assert writer.drain() == 6
    writer.close()
    assert commits[0] == (0, {"one": "", "two": None})  # the first file, opened
    assert commits[1] == (3, {"one": "line 0\nline 1\nline 2\n", "two": ""})
    assert commits[-1][0] == 6
    assert (tmp_path / "two" / "two.log").read_text() == "line 3\nline 4\nline 5\n"


# -- a full ring -----------------------------------------------------------------------------------


def _stop_writer(session: shmlog.Session) -> int:
    """SIGSTOP the session's writer once it is up and idle; the caller SIGCONTs it."""
    assert session.flush()  # the writer is up, and idle
    writer = session.writer_pid
    assert alive(writer)
    os.kill(writer, signal.SIGSTOP)
    return writer


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rank", [0, 1])
def test_full_ring_drops_with_a_bound_and_reports_the_count(
    tmp_path: Path, name: str, rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the writer stopped, logging never blocks longer than the documented bound;
    the file then says exactly how many records were dropped, and nothing else is lost.

    The report goes into the file with the gap: rank 1's own file for rank 1.
    """
    if rank:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
    log_file = str(tmp_path / "tmp.log")
    padding = "x" * 8000  # about 8 KiB a record: the 256 KiB ring holds ~30
    lines = 100
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"full-{name}", log_file=log_file, distributed=True)
        logger.info("first")
        durations = []
        writer = _stop_writer(session)
        try:
            for i in range(lines):
                began = time.perf_counter()
                logger.info(f"main line {i} {padding}")
                durations.append(time.perf_counter() - began)
        finally:
            os.kill(writer, signal.SIGCONT)
        assert session.flush()  # the writer made room again
        for i in range(lines, lines + 50):
            logger.info(f"main line {i}")
        assert session.flush()
        assert session.writer_pid == writer
    assert wait_gone(writer)

    # Waits are bounded (BLOCK_SECONDS, then drops are immediate): no call
    # came anywhere near a second.
    assert max(durations) < 1.0, max(durations)
    assert sorted(os.listdir(tmp_path / "tmp")) == [rank_file(Path(), rank).name]
    entries = read_log(rank_file(tmp_path / "tmp", rank))
    messages = [message for _level, message in entries]
    numbers = numbered(messages, "main")
    kept = [n for n in numbers if n < lines]
    dropped = lines - len(kept)
    assert 0 < dropped < lines
    # The writer never ran while the ring was full: what fitted is kept, in
    # order, and every record after the first drop was dropped too.
    assert kept == list(range(len(kept)))
    assert [n for n in numbers if n >= lines] == list(range(lines, lines + 50))
    reports = [(i, level, DROPPED.match(message)) for i, (level, message) in enumerate(entries)]
    reports = [(i, level, match) for i, level, match in reports if match is not None]
    assert len(reports) == 1, reports
    at, level, match = reports[0]
    assert level == "WARNING"
    assert int(match.group(1)) == dropped
    assert match.group(2) == ("main" if rank == 0 else f"rank{rank}")
    # The report comes after the records that were kept.
    assert at > messages.index(f"main line {len(kept) - 1} {padding}")


# More markers than fit in the largest gap 8 KB records leave in a 256 KiB ring.
MARKERS = 300


@pytest.mark.timeout(120)
def test_full_ring_costs_one_wait_across_loggers_and_progress_markers(
    tmp_path: Path, name: str
) -> None:
    """Once the ring refused a record, other MMLoggers of the process and progress
    markers that do not fit either are dropped at once: the state is the ring's."""
    log_file = str(tmp_path / "tmp.log")
    padding = "x" * 8000
    hub_name = f"hub-{name}"
    with shmlog.init(name, log_file=log_file, log_processor={"window_size": 1},
                     log_interval=1, hub=hub_name, tensorboard=False) as session:
        first = MMLogger.get_instance(f"first-{name}", log_file=log_file)
        second = MMLogger.get_instance(f"second-{name}", log_file=log_file)
        MessageHub.get_instance(hub_name).update_scalar("train/loss", 1.0)
        first.info("ready")

        def marker(i: int) -> None:
            shmlog.report_progress("train", i, iter=i, dataloader_len=100, max_epochs=1)

        writer = _stop_writer(session)
        try:
            for i in range(40):  # ~8 KiB each: about 30 fit, then one wait, then drops
                first.info(f"first line {i} {padding}")
            for i in range(MARKERS):  # markers (all of one size) fill any gap left, then drop
                marker(i)
            began = time.perf_counter()
            for i in range(MARKERS, MARKERS + 10):  # neither fits any more
                second.info(f"second line {i} {padding}")
                marker(i)
            spent = time.perf_counter() - began
        finally:
            os.kill(writer, signal.SIGCONT)
        assert session.flush()
    assert wait_gone(writer)

    # Twenty refused puts: waiting BLOCK_SECONDS for each would take 4 s.
    assert spent < 1.0, spent
    text = (tmp_path / "tmp" / "tmp.log").read_text(encoding="utf-8")
    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    assert numbered(messages, "second") == []
    kept = numbered(messages, "first")
    markers_kept = text.count(" - Epoch(train)")
    # (Whether any marker fitted in the gap the big records left depends on
    # record sizes, which include the log file's path.)
    assert 0 < len(kept) < 40 and markers_kept < MARKERS
    counts = [int(m.group(1)) for m in map(DROPPED.match, messages) if m is not None]
    assert counts == [(40 - len(kept)) + (MARKERS + 10 - markers_kept) + 10]


# -- flushing ------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("log_writer", ["sidecar", "thread"])
def test_close_flushes_every_record(tmp_path: Path, name: str, log_writer: str) -> None:
    """Every record emitted before ``close()`` is in the file when ``close()`` returns."""
    log_file = str(tmp_path / "tmp.log")
    session = shmlog.init(name, log_file=log_file, log_writer=log_writer)
    try:
        logger = MMLogger.get_instance(f"close-{name}", log_file=log_file)
        for i in range(1000):
            logger.info(f"main line {i}")
        writer = session.writer_pid  # the sidecar may not have started yet
    finally:
        session.close()
    assert numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "main") == list(range(1000))
    if log_writer == "sidecar" and writer:
        assert wait_gone(writer)


@pytest.mark.timeout(120)
def test_exit_without_close_flushes_every_record(tmp_path: Path, name: str) -> None:
    """A program that logs and exits normally without closing finds all its lines written."""
    log_file = tmp_path / "tmp.log"
    cfg = {"name": name, "log_file": str(log_file), "instance": f"exit-{name}",
           "distributed": False}
    (rank,) = start_ranks(1, cfg, tmp_path)
    try:
        rank.ask("log 0 1000", "logged")
        code = rank.finish("exit")
    finally:
        rank.kill()
    assert code == 0, rank.stderr()
    assert numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "rank0") == list(range(1000))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("made", ["before-init", "in-session", "in-session-silent"])
def test_logging_after_close_continues_the_file(tmp_path: Path, name: str, made: str) -> None:
    """Lines logged after the session closed are appended to what the writer wrote:
    never over it (a logger made before init) and never truncating it (one made inside,
    whether its own lines or only a worker's went through the writer)."""
    log_file = str(tmp_path / "tmp.log")
    instance = f"after-{name}"
    if made == "before-init":
        logger = MMLogger.get_instance(instance, log_file=log_file)
    with shmlog.init(name, log_file=log_file) as session:
        if made != "before-init":
            logger = MMLogger.get_instance(instance, log_file=log_file)
        if made == "in-session-silent":
            child = multiprocessing.get_context("fork").Process(
                target=log_as_worker, args=(instance, log_file, 0, 5))
            child.start()
            child.join(TIMEOUT)
            assert child.exitcode == 0
        else:
            for i in range(5):
                logger.info(f"main line {i}")
        assert session.flush()
        writer = session.writer_pid
    logger.info("after close")
    logger.info("after close again")
    assert wait_gone(writer)

    messages = messages_of(tmp_path / "tmp" / "tmp.log")
    inside = ([f"[worker0] worker0 line {i}" for i in range(5)] if made == "in-session-silent"
              else [f"main line {i}" for i in range(5)])
    assert messages == [*inside, "after close", "after close again"]


# -- LogProcessor lines and exported scalars ------------------------------------------------------------

PROCESSOR_CFG = {
    "window_size": 4,
    "by_epoch": True,
    "num_digits": 3,
    "custom_cfg": [
        {"data_src": "loss", "method_name": "max", "log_name": "loss_max",
         "window_size": "global"},
        {"data_src": "acc", "method_name": "min", "window_size": 2},
    ],
}
INTERVAL = 5
ITERS, DATALOADER_LEN, MAX_EPOCHS = 10, 12, 3  # the last iteration is a logged step


def _train(hub: MessageHub) -> None:
    for it in range(ITERS):
        hub.update_scalar("train/loss", 2.0 / (it + 1) + 0.01 * (it % 3))
        hub.update_scalar("train/lr", 0.1 * 0.9**it)
        hub.update_scalar("train/time", 0.2 + 0.01 * (it % 4))
        hub.update_scalar("train/data_time", 0.05 + 0.001 * it)
        hub.update_scalar("train/acc", 0.5 + 0.03 * ((it * 7) % 5))
        shmlog.report_progress(
            "train", it, iter=it, epoch=0, dataloader_len=DATALOADER_LEN,
            max_iters=DATALOADER_LEN * MAX_EPOCHS, max_epochs=MAX_EPOCHS,
        )


def _epoch_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines()
            if " - Epoch(train)" in line]


@pytest.mark.timeout(120)
def test_writer_line_equals_in_process_line_and_jsonl_matches(tmp_path: Path, name: str) -> None:
    """The writer's Epoch line is LogProcessor's in-process line for the same state, and
    scalars.jsonl holds one object per logged step with the line's values."""
    log_file = tmp_path / "tmp.log"
    hub_name = f"hub-{name}"
    with shmlog.init(name, log_file=str(log_file), log_processor=PROCESSOR_CFG,
                     log_interval=INTERVAL, hub=hub_name, tensorboard=False) as session:
        hub = MessageHub.get_instance(hub_name)
        _train(hub)
        assert session.flush()
        last = ITERS - 1
        max_iters = DATALOADER_LEN * MAX_EPOCHS
        eta = float(hub.get_scalar("train/time").mean(PROCESSOR_CFG["window_size"])) * (
            max_iters - last - 1)
        hub.update_info("eta", eta)
        tag, line = LogProcessor(**PROCESSOR_CFG).format_iter(
            hub, "train", last, iter=last, epoch=0, dataloader_len=DATALOADER_LEN,
            max_iters=max_iters, max_epochs=MAX_EPOCHS,
        )
        writer = session.writer_pid
    assert wait_gone(writer)

    directory = tmp_path / "tmp"
    lines = _epoch_lines(directory / "tmp.log")
    logged_steps = [it + 1 for it in range(ITERS) if (it + 1) % INTERVAL == 0]
    assert len(lines) == len(logged_steps)
    assert strip_date(lines[-1]) == f"mmengine - INFO - {line}"
    assert "loss_max: " in line and "acc: " in line and "eta: " in line

    rows = [json.loads(text) for text in
            (directory / "scalars.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rows] == logged_steps
    assert all(row["mode"] == "train" for row in rows)
    assert {k: v for k, v in rows[-1].items() if k not in ("step", "mode")} == dict(tag)
    digits = PROCESSOR_CFG["num_digits"]
    for row, text in zip(rows, lines):
        values = {k: v for k, v in row.items() if k not in ("step", "mode", "iter", "epoch")}
        assert set(values) == {"loss", "loss_max", "lr", "time", "data_time", "acc"}
        for key, value in values.items():
            shown = f"{value:.{digits}e}" if key == "lr" else f"{value:.{digits}f}"
            assert f"  {key}: {shown}" in text, (key, value, text)
        assert text.split(" - ", 3)[3].startswith(f"Epoch(train) [{row['epoch']}]")


# -- who writes ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_writer_pid_is_the_same_from_every_member(tmp_path: Path, name: str) -> None:
    log_file = tmp_path / "tmp.log"
    cfg = {"name": name, "log_file": str(log_file), "instance": f"pid-{name}",
           "distributed": False}
    ranks = start_ranks(2, cfg, tmp_path)
    try:
        ranks[0].ask("log 0 1", "logged")
        assert ranks[0].ask("flush", "flushed") == ["True"]
        seen = [int(rank.ask("writer", "writer")[0]) for rank in ranks]
    finally:
        codes = finish_all(ranks)
    assert codes == [0, 0]
    assert seen[0] == seen[1] > 0
    assert seen[0] not in {rank.pid for rank in ranks}
    assert wait_gone(seen[0])


@pytest.mark.timeout(120)
def test_a_writer_waiting_for_the_lock_exits_with_the_session_and_leaves_nothing(
    tmp_path: Path, name: str
) -> None:
    """A second would-be writer waiting for the lock while the session ends (a sidecar that
    started after a member's standby took over) exits, and nothing of the session stays in
    /dev/shm: the election lock is a lock on the control segment, not a file of its own."""
    from shmlog.shm.names import control_name, prefix
    from shmlog.writer import serve

    with shmlog.init(name, log_writer="thread") as session:
        logger = MMLogger.get_instance(f"lock-{name}", log_file=str(tmp_path / "tmp.log"))
        logger.info("written by this process's standby thread")
        assert session.flush()
        assert session.writer_pid == os.getpid()
        # Not named as the writer: this process's thread stays the writer.
        sidecar = serve.start_sidecar(session.shared, placeholder=(-1, -1))
        assert session.writer_pid == os.getpid()
        try:
            # Attached (its mappings show the control segment): from here on it
            # only waits for the lock this process holds.
            control = control_name(name).lstrip("/")
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                with open(f"/proc/{sidecar.pid}/maps") as maps:
                    if control in maps.read():
                        break
                time.sleep(0.01)
            else:
                raise AssertionError("the second writer never attached")
        except BaseException:
            sidecar.kill()
            sidecar.wait(TIMEOUT)
            raise
    assert sidecar.wait(TIMEOUT) == 0
    assert [e for e in os.listdir("/dev/shm") if e.startswith(prefix(name))] == []


# -- a node without shared storage -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_without_shared_storage_files_go_to_stem_logs(tmp_path: Path, name: str) -> None:
    """``shared_storage=False``: the seed's multi-node layout, ``tmp_logs/tmp_rank<N>.log``."""
    log_file = tmp_path / "tmp.log"
    cfg = {"name": name, "log_file": str(log_file), "instance": f"node-{name}",
           "distributed": True, "init": {"shared_storage": False}}
    ranks = start_ranks(2, cfg, tmp_path)
    try:
        for rank in ranks:
            rank.ask("log 0 20", "logged")
        assert ranks[0].ask("flush", "flushed") == ["True"]
    finally:
        codes = finish_all(ranks)
    assert codes == [0, 0]
    assert not (tmp_path / "tmp").exists()
    assert sorted(os.listdir(tmp_path / "tmp_logs")) == ["tmp.log", "tmp_rank1.log"]
    for rank in range(2):
        messages = messages_of(tmp_path / "tmp_logs" / rank_file(Path(), rank))
        assert numbered(messages, f"rank{rank}") == list(range(20))


# -- the benchmark -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_bench_logging_quick() -> None:
    env = child_env()
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_logging.py"), "--quick"],
        capture_output=True, text=True, timeout=110, env=env, check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "complete: yes" in done.stdout
    assert "complete: no" not in done.stdout
    for needle in ("records/s", "per logger.info call", "writer CPU",
                   "report_progress -> the iteration line", "without TensorBoard: first line"):
        assert needle in done.stdout, done.stdout


@pytest.mark.timeout(120)
def test_logged_steps_are_exported_to_tensorboard(tmp_path: Path, name: str) -> None:
    """With tensorboardX installed, every logged step's values reach the event file."""
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    log_file = tmp_path / "tmp.log"
    hub_name = f"hub-{name}"
    with shmlog.init(name, log_file=str(log_file), log_processor=PROCESSOR_CFG,
                     log_interval=INTERVAL, hub=hub_name) as session:
        _train(MessageHub.get_instance(hub_name))
        assert session.flush()
        writer = session.writer_pid
    assert wait_gone(writer)

    events = sorted((tmp_path / "tmp" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no event file was written"
    seen: dict[str, list[int]] = {}
    for path in events:
        data = path.read_bytes()
        at = 0
        while at < len(data):  # TFRecord framing: u64 length, u32 crc, data, u32 crc
            length = int.from_bytes(data[at:at + 8], "little")
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                seen.setdefault(value.tag, []).append(event.step)
    logged_steps = [it + 1 for it in range(ITERS) if (it + 1) % INTERVAL == 0]
    for tag in ("loss", "lr", "time", "data_time", "loss_max"):
        assert seen.get(tag) == logged_steps, (tag, seen.get(tag))

"""Draining every record ring of a session into the files MMLogger would have written.

Training processes only put records into their rings (``shmlog.api.record_handler``);
the designated writer drains every ring of the session and writes what each
record's MMLogger would have written, to the files the seed's layout names:
``<dir>/<stem>.log`` for rank 0 and ``<dir>/<stem>_rank<N>.log`` for rank N
when distributed logging is on.  Records of DataLoader workers go to their
rank's file, marked ``[worker<id>]``.

Records go in batches: across rings in the order they were created, to
within ``MERGE_SECONDS`` (a ring that was empty when a batch began joins it
within ``REPOLL_RECORDS`` records), within a ring in the order they were
put.  Each batch is written with one write and one flush per file and then
committed (``shmlog.writer.commit``), which is what makes a takeover after a
crash write every record exactly once.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from ..format.files import build_file_handler, log_file_for_rank
from ..shm import codec
from ..shm.record_rings import RecordConsumer
from ..shm.session import SessionSegments
from ..wire import (
    CREATED,
    Commit,
    LogLine,
    LogRecordData,
    Progress,
    ProgressMarker,
    Route,
    decode_entry,
    entry_shape,
    route_key,
)
from .commit import CommitLog, recover
from .sinks import LogSink, Sink, TextSink, to_log_record

__all__ = ["BATCH_RECORDS", "MERGE_SECONDS", "REPOLL_RECORDS", "LogWriter", "to_log_record"]

# Records of different rings made this close together may be written in
# either order (each ring's own stay in theirs): two producers logging at
# once then cost the writer a run of records each, not a merge per record.
MERGE_SECONDS = 0.001
# Records written between two looks at the rings that had nothing to write.
REPOLL_RECORDS = 128
# A batch ends after this many records, or once a ring has a quarter of its
# bytes read but not committed (its producer needs that room back).
BATCH_RECORDS = 4096
assert BATCH_RECORDS % REPOLL_RECORDS == 0  # the loop checks the batch size at repolls
_RING_SHARE = 4
_UNKNOWN = object()
_NO_LINE_FILE = (None, None, 0, None)


class LogWriter:
    """Drains a session's record rings into files (one instance per writer process)."""

    def __init__(self, segments: SessionSegments, per_node: bool = False) -> None:
        self._segments = segments
        # Called with the Progress of each progress marker (see
        # ``shmlog.report_progress``) and the rank that put it (-1: none), in
        # the order the markers were put.
        self.on_progress: Callable[[Progress, int], None] | None = None
        self._per_node = per_node
        # Sink per (route, rank): several routes may name one file; None when
        # that rank writes no file.
        self._routes: dict[tuple[Route, int], LogSink | None] = {}
        self._by_id: dict[tuple[str, int], LogSink | None] = {}  # (route id, rank)
        self._sinks: dict[str, Sink] = {}
        self._last_route: dict[int, tuple[str, int]] = {}  # slot -> (route id, rank)
        self._line_files: dict[int, tuple] = {}  # slot -> see _write_run
        self._commits = CommitLog(segments)
        commit = self._commits.load()
        self._seq = 0 if commit is None else commit.seq
        self._committed_files = {} if commit is None else dict(commit.files)
        # Whether the last drain() stopped before the rings were empty (its
        # batch was full, or a producer needed room).
        self.cut_short = False
        self._skipped = 0  # malformed records (see _malformed)
        self._consumers: list[RecordConsumer] = segments.record_consumers()
        recover(commit, self._consumers)

    # -- files -----------------------------------------------------------------------

    def sink_for(self, route: Route, rank: int) -> LogSink | None:
        """The file rank ``rank`` writes for ``route``; None if it writes none."""
        key = (route, rank)
        if key in self._routes:
            return self._routes[key]
        log_file, distributed, world_size, mode, cfg_text, level = route
        path = log_file_for_rank(log_file, rank, world_size, distributed, level, self._per_node)
        sink = None
        if path is not None:
            sink = self._sinks.get(os.path.abspath(path))
            if sink is None:
                sink = self._open_log(route, rank, path, mode, cfg_text)
        self._routes[key] = sink
        return sink

    def _open_log(self, route: Route, rank: int, path: str, mode: str,
                  cfg_text: str | None) -> LogSink | None:
        # A file a previous writer of this session committed is continued,
        # never truncated again.
        if os.path.abspath(path) in self._committed_files:
            mode = "a"
        cfg = None if cfg_text is None else json.loads(cfg_text)
        try:
            handler = build_file_handler(
                route.log_file, rank, route.world_size, route.distributed, mode, cfg, route.level,
                self._per_node,
            )
        except OSError as exc:
            # One file that cannot be opened must not stop the writer (and
            # every other process's file with it).
            print(f"shmlog: cannot open log file {path}: {exc}; records for it are not "
                  f"written", file=sys.stderr)
            return None
        if handler is None:
            return None
        sink = LogSink(handler, self.commit)
        self._add_sink(sink)
        return sink

    def text_sink(self, path: str) -> TextSink:
        """A plain file of the writer's own (an export), committed like the logs."""
        path = os.path.abspath(path)
        sink = self._sinks.get(path)
        if sink is None:
            sink = TextSink(path)
            self._add_sink(sink)
        assert isinstance(sink, TextSink)
        return sink

    def _add_sink(self, sink: Sink) -> None:
        self._sinks[sink.path] = sink
        # Its baseline is committed before anything is written into it: a
        # successor then knows what the file held before this writer.
        self.commit()

    # -- records -----------------------------------------------------------------------

    def unread(self) -> bool:
        """Whether any ring holds records this writer has not read."""
        return any(c.unread() for c in self._refresh())

    def _refresh(self) -> list[RecordConsumer]:
        # Rings created since the last look start at their own positions
        # (nothing of theirs was committed by anyone).
        self._consumers = self._segments.record_consumers()
        return self._consumers

    def drain_all(self) -> int:
        """Write and commit every pending record, batch by batch; returns how many."""
        total = 0
        while True:
            done = self.drain()
            total += done
            if not done:
                return total

    def drain(self) -> int:
        """Write and commit one batch (see the module docstring); returns its records."""
        consumers = self._refresh()
        # (created, ring index): the oldest record of every ring first.
        heads: list[tuple[float, int]] = []
        queued: set[int] = set()
        for index, consumer in enumerate(consumers):
            record = consumer.next()
            if record is not None:
                heads.append((record[CREATED], index))
                queued.add(index)
        heapq.heapify(heads)
        done = 0
        pop, push = heapq.heappop, heapq.heappush
        room_needed = False
        while heads and done < BATCH_RECORDS:
            _created, index = pop(heads)
            consumer = consumers[index]
            # This ring's records go on while none is newer than the oldest
            # record of the other rings: a producer's records come in runs
            # (it logs while others wait for a CPU), read in one call and
            # written with no heap operation for each.
            run, ends = consumer.take(REPOLL_RECORDS - done % REPOLL_RECORDS,
                                      heads[0][0] + MERGE_SECONDS if heads else math.inf)
            self._write_run(consumer, run, ends)
            done += len(run)
            if consumer.cursor - consumer.committed > consumer.capacity // _RING_SHARE:
                room_needed = True  # commit now: its producer needs the room
                break
            record = consumer.next()
            if record is None:
                queued.discard(index)
            else:
                push(heads, (record[CREATED], index))
            if not done % REPOLL_RECORDS:
                # Busy producers can keep one batch going: rings that were
                # empty when it began, or appeared since, join it here
                # instead of waiting for its end (their producers would block).
                consumers = self._refresh()
                for other, waiting in enumerate(consumers):
                    if other not in queued:
                        record = waiting.next()
                        if record is not None:
                            push(heads, (record[CREATED], other))
                            queued.add(other)
        reported = False
        for consumer in consumers:
            # Drops come after what the ring held (it was full): report them
            # once the ring is read to its end, where the gap is.
            if not consumer.unread():
                reported = self._report_drops(consumer) or reported
        self.cut_short = room_needed or done >= BATCH_RECORDS
        if done or reported:
            self.commit()
        return done

    def _write_run(self, consumer: RecordConsumer, run: list[tuple], ends: list[int]) -> None:
        """Write a run of one ring's records, moving its cursor past each.

        Hot: a LogLine for the same file as the record before it is only
        appended.  Anything else takes :meth:`_write`, with the cursor at the
        record, since that may commit (opening a file, rolling one over).
        """
        slot = consumer.slot
        # The file of the ring's last LogLine: (route id, rank, level, its adder).
        route, rank, level, append = self._line_files.get(slot, _NO_LINE_FILE)
        start = consumer.cursor  # where the record at hand starts
        for data, end in zip(run, ends):
            try:
                item = decode_entry(data)
            except ValueError:
                item = None
            if type(item) is LogLine and item.route == route and item.rank == rank \
                    and type(item.text) is str:
                if item.levelno >= level:
                    append(item.text)
            else:
                consumer.cursor = start
                sink = None
                try:
                    sink = self._write(decode_entry(data) if item is None else item, slot)
                except Exception as exc:  # noqa: BLE001 (one bad record must not stop the writer)
                    self._malformed(data, slot, exc)
                route = rank = None
                if type(item) is LogLine and sink is not None and not sink.rotates:
                    # (a rotating file sees each line: it may roll over before it)
                    route, rank, level, append = item.route, item.rank, sink.handler.level, \
                        sink.adder()
                self._line_files[slot] = (route, rank, level, append)
            start = end
        consumer.cursor = start

    def _write(self, item: LogRecordData | LogLine | ProgressMarker,
               slot: int) -> LogSink | None:
        """Write one decoded entry; returns the file it went to (None: a progress marker, or none)."""
        if type(item) is ProgressMarker:
            if self.on_progress is not None:
                self.on_progress(Progress._make(item.progress), self._segments.control.slot(
                    slot).rank)
            return None
        key = (item.route, item.rank)
        self._last_route[slot] = key
        sink = self._by_id.get(key, _UNKNOWN)
        if sink is _UNKNOWN:
            route = self._route(key[0])
            sink = None if route is None else self.sink_for(route, key[1])
            self._by_id[key] = sink
        if sink is not None:
            sink.write(item)
        return sink

    def _malformed(self, data: Any, slot: int, exc: Exception) -> None:
        """Skip a record that is not a LogRecordData or ProgressMarker; say so once."""
        self._skipped += 1
        if self._skipped == 1:
            label = self._segments.slot_labels().get(slot, f"writer{slot}")
            print(f"shmlog: a log record from {label} could not be written "
                  f"({type(exc).__name__}: {exc}; {entry_shape(data)}); records like it are "
                  f"skipped and counted", file=sys.stderr, flush=True)

    def _route(self, ident: str) -> Route | None:
        raw = self._segments.info_get(route_key(ident))
        if raw is None:
            print(f"shmlog: a log record names route {ident}, which is not in the session; "
                  f"it is not written", file=sys.stderr)
            return None
        return Route._make(codec.decode(raw))

    def _report_drops(self, consumer: RecordConsumer) -> bool:
        dropped = consumer.unreported_drops()
        if not dropped:
            return False
        label = self._segments.slot_labels().get(consumer.slot, f"writer{consumer.slot}")
        message = (
            f"shmlog: {dropped} log record(s) from {label} were dropped because its record "
            f"ring stayed full (the log writer could not keep up)"
        )
        # Reported in the file the dropped records were going to, where the
        # gap is (a rank's own file, or rank 0's for its workers).
        last = self._last_route.get(consumer.slot)
        sink = None if last is None else self._by_id.get(last)
        if sink is not None:
            sink.write_record(logging.makeLogRecord({
                "name": "shmlog", "msg": message, "levelno": logging.WARNING,
                "levelname": "WARNING",
            }))
        else:
            print(message, file=sys.stderr)
        consumer.mark_reported(dropped)
        return True

    # -- commits -----------------------------------------------------------------------

    def commit(self) -> None:
        """Flush every file, store the commit, then move the rings' ``consumed``."""
        for sink in self._sinks.values():
            sink.flush()
        files = {}
        for path, sink in self._sinks.items():
            state = sink.state()
            if state is not None:
                files[path] = state
        self._seq += 1
        rings = {c.ident: (c.cursor, c.reported) for c in self._consumers}
        self._commits.store(Commit(self._seq, files, rings))
        self._committed_files.update(files)
        for consumer in self._consumers:
            consumer.commit()

    def close(self) -> None:
        if self._skipped > 1:
            print(f"shmlog: {self._skipped} log records could not be written and were skipped",
                  file=sys.stderr, flush=True)
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._routes.clear()
        self._by_id.clear()

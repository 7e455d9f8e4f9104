"""Short-lived processes that are not DataLoader workers: a bounded session, exact totals.

A process pool that replaces its processes (``maxtasksperchild``), a
process per evaluation, any forked helper: each is known by its pid, and
each continues the rings of one that exited.  However many such processes
ever wrote, the session keeps as many slots and rings as ran at
once, and a few more, so /dev/shm and the cost of a read stay flat, and every update of
every process stays in the key's totals.  (The last ``KEEP_EXITED`` of
them keep rings of their own, for ``shmlog top`` and ``per_writer``.)
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from _shared_workers import shm_bytes
from _writer_workers import messages_of, numbered

import shmlog
from shmlog import MessageHub, MMLogger
from shmlog.shm.slots import KEEP_EXITED

KEYS = ("eval/a", "eval/b", "eval/c")
AT_ONCE = 4


def _evaluate(hub_name: str, logger_name: str, number: int, together) -> None:
    hub = MessageHub.get_instance(hub_name)
    for key in KEYS:
        hub.update_scalar(key, float(number))
    MMLogger.get_instance(logger_name).info(f"eval line {number}")
    together.wait(timeout=60)  # the round's processes all run at once


def _round(hub_name: str, logger_name: str, first: int) -> None:
    context = multiprocessing.get_context("fork")
    together = context.Barrier(AT_ONCE)
    processes = [
        context.Process(target=_evaluate, args=(hub_name, logger_name, first + i, together))
        for i in range(AT_ONCE)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0


@pytest.mark.timeout(300)
def test_short_lived_processes_keep_the_session_flat_and_the_totals_exact(
    tmp_path: Path, name: str
) -> None:
    log_file = str(tmp_path / "tmp.log")
    rounds = 40
    with shmlog.init(name, log_file=log_file) as session:
        hub = MessageHub.get_instance(f"short-{name}")
        logger = MMLogger.get_instance(f"short-{name}", log_file=log_file)
        logger.handlers[0].setLevel("ERROR")  # the terminal
        hub.update_scalar("eval/a", 0.0)  # the main process writes too
        sizes, slots = [], []
        for r in range(rounds):
            _round(hub.instance_name, logger.instance_name, r * AT_ONCE)
            sizes.append(shm_bytes(name))
            slots.append(len(session.shared.control.slots()))
        assert session.flush()
        numbers = range(rounds * AT_ONCE)
        for key in KEYS:
            totals = hub.get_scalar(key).totals()
            extra = 1 if key == "eval/a" else 0
            assert totals.count_sum == len(numbers) + extra, key
            assert totals.value_sum == float(sum(numbers)), key
            # One ring per process running at once (and the main process's),
            # and the last KEEP_EXITED ones that exited.
            assert len(hub.get_scalar(key).per_writer()) == AT_ONCE + KEEP_EXITED + extra, key
    # Once KEEP_EXITED processes exited nothing grows: no new slot, no new segment.
    settled = KEEP_EXITED // AT_ONCE
    assert slots[settled:] == [AT_ONCE + KEEP_EXITED + 1] * (rounds - settled), slots
    assert sizes[settled:] == [sizes[settled]] * (rounds - settled), sizes
    assert sorted(numbered(messages_of(tmp_path / "tmp" / "tmp.log"), "eval")) == list(numbers)

"""Ranks stay apart: a hub's statistics show the reading process's rank and its workers."""

from __future__ import annotations

import multiprocessing
import os
import re

import pytest
from _shared_workers import TIMEOUT, join_all, rank_view

import shmlog
from shmlog import MessageHub
from shmlog.stats.shared_hub import SharedHub

# (rank, DataLoader worker id or None, the value it logs)
WRITERS = [(0, None, 1.0), (0, 0, 3.0), (1, None, 10.0), (1, 0, 30.0)]


@pytest.mark.timeout(90)
def test_each_rank_reads_its_own_writers_and_per_writer_lists_everyone(name: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(WRITERS) + 1)
    with shmlog.init(name, log_writer="none"):
        pipes, children = [], []
        for rank, worker, value in WRITERS:
            ours, theirs = ctx.Pipe()
            child = ctx.Process(target=rank_view, args=(name, rank, worker, value, barrier, theirs))
            child.start()
            pipes.append(ours)
            children.append(child)
        barrier.wait(TIMEOUT)
        seen = [pipe.recv() if pipe.poll(TIMEOUT) else None for pipe in pipes]
        # This process has no rank: one rank, everyone's records.
        everyone = MessageHub.get_instance(name).get_scalar("train/x")
        assert everyone.totals().updates == 12 and everyone.mean() == (3 + 9 + 30 + 90) / 12
        assert sorted(MessageHub.get_instance(name).log_scalars) == [
            "train/only0", "train/only1", "train/x"]
        barrier.wait(TIMEOUT)
        join_all(children)
    for (rank, _worker, _value), (mean, updates, keys, labels) in zip(WRITERS, seen):
        assert (mean, updates) == ((2.0, 6) if rank == 0 else (20.0, 6))
        assert keys == [f"train/only{rank}", "train/x"]  # the other rank's key is not there
        assert len(labels) == 4
        assert sum(bool(re.fullmatch(r"rank\d/worker0", label)) for label in labels) == 2
        assert {label.split("/")[0] for label in labels} == {"rank0", "rank1"}


def test_a_scope_other_than_the_rank_is_refused(name: str) -> None:
    session = shmlog.init(name, log_writer="none")
    try:
        with pytest.raises(ValueError, match=r"scope: expected one of \['rank'\], got 'job'"):
            SharedHub(session.shared, "hub", session.capacity_of, scope="job")
    finally:
        session.close()


def test_identity_is_one_frozen_object_made_by_the_rank_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from shmlog.api.process import SessionIdentity, identity

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SHMLOG_WORKER_ID"):
        monkeypatch.delenv(var, raising=False)
    me = identity()
    assert (me.rank, me.world_size, me.local_rank, me.worker, me.distributed, me.label) == (
        0, 1, 0, -1, False, "main")
    assert me.slot_rank == -1 and identity("pid7").label == "pid7"
    with pytest.raises(AttributeError):
        me.rank = 1  # frozen
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("SHMLOG_WORKER_ID", "2")
    me = identity("pid7")
    assert (me.rank, me.world_size, me.local_rank, me.worker, me.distributed, me.label) == (
        3, 4, 1, 2, True, "rank3/worker2")
    # What a session's slots record: a member's own process is its rank's main process.
    monkeypatch.delenv("SHMLOG_WORKER_ID")
    assert SessionIdentity(member=True).slot_owner() == (3, -1, "rank3")
    assert SessionIdentity(member=False).slot_owner()[2] == f"rank3/pid{os.getpid()}"
    assert SessionIdentity(member=False).reader_rank() == 3

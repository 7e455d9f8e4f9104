"""One session seen from one process: many keys, footprint, bad values, threads, restore.

These tests check what a session promises beyond a single writer: it grows
by adding segments, stays small by default, refuses bad input exactly as a
process-local hub does, and keeps exact totals with several writers.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _shared_workers import (
    TIMEOUT,
    join_all,
    log_keys,
    shm_bytes,
    shm_entries,
)

import shmlog
from shmlog import HistoryBuffer, MessageHub
from shmlog.api.process import PROCESS

pytestmark = pytest.mark.timeout(60)


# -- many keys -----------------------------------------------------------------------


def test_300_keys_from_a_child_grow_the_session_by_segments(name: str) -> None:
    """300 keys logged by a spawn child are all listed with exact values; rings spill over."""
    keys = [f"key/{i:03d}" for i in range(300)]
    with shmlog.init(name, capacity=1024) as session:
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=log_keys, args=("many", keys, None))
        child.start()
        join_all([child])

        hub = MessageHub.get_instance("many")
        scalars = hub.log_scalars
        assert list(scalars) == keys
        for k, key in enumerate(keys):
            buffer = scalars[key]
            values, counts = buffer.data
            assert values.tolist() == [k, k + 0.5]
            assert counts.tolist() == [1.0, 3.0]
            assert buffer.mean() == (2 * k + 0.5) / 4
            assert hub.get_scalar(key).current() == k + 0.5

        rings = [e for e in shm_entries(name) if e.startswith("r")]
        assert len(rings) >= 3, rings
        assert sorted(rings) == sorted(f"r{i}" for i in range(len(rings)))
        assert session.shared.control.read_state().ring_segments == len(rings)


def test_300_keys_in_one_process(name: str) -> None:
    """The writing process itself lists and reads back all 300 keys."""
    keys = [f"k{i}" for i in range(300)]
    with shmlog.init(name, capacity=256, segment_bytes=256 << 10):
        hub = MessageHub.get_instance("many-local")
        for k, key in enumerate(keys):
            hub.update_scalar(key, k)
        assert sorted(hub.log_scalars) == sorted(keys)
        assert [hub.get_scalar(key).current() for key in keys] == list(range(300))
        assert len([e for e in shm_entries(name) if e.startswith("r")]) >= 3


# -- default footprint ----------------------------------------------------------------


def test_default_footprint_of_8_workers_and_main_stays_under_16_mib(name: str) -> None:
    """8 DataLoader-style workers x 4 keys + 32 keys in main fit in 16 MiB of /dev/shm."""
    worker_keys = [f"data/{k}" for k in ("time", "size", "hits", "misses")]
    with shmlog.init(name) as session:
        ctx = multiprocessing.get_context("fork")
        workers = [
            ctx.Process(target=log_keys, args=("footprint", worker_keys, w)) for w in range(8)
        ]
        for w in workers:
            w.start()
        join_all(workers)
        hub = MessageHub.get_instance("footprint")
        for k in range(32):
            hub.update_scalar(f"train/{k}", k)

        assert set(hub.get_scalar("data/time").per_writer()) == {f"worker{w}" for w in range(8)}
        assert len(hub.log_scalars) == 36
        used = shm_bytes(name)
        assert used <= 16 << 20, f"{used / (1 << 20):.1f} MiB of /dev/shm"
        assert used == session.shared.total_bytes()


# -- bad values --------------------------------------------------------------------------

BAD_VALUES = [
    ("str", "1.0", 1),
    ("none", None, 1),
    ("bool", True, 1),
    ("array", np.array([1.0, 2.0]), 1),
    ("list", [1.0], 1),
    ("object", object(), 1),
    ("huge int", 10**400, 1),
    ("negative count", 1.0, -1),
    ("nan count", 1.0, float("nan")),
    ("inf count", 1.0, float("inf")),
    ("str count", 1.0, "2"),
]


def _error_of(call) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(("value", "count"), [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_scalar_gets_the_local_error_and_changes_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch, value, count
) -> None:
    """In a session a refused value raises what a local hub raises and leaves no record."""
    with monkeypatch.context() as local_mode:
        local_mode.setattr(PROCESS, "resolver", None)
        local = MessageHub(name="local-reference")
        expected = _error_of(lambda: local.update_scalar("train/loss", value, count))
    assert "'train/loss'" in expected[1]

    with shmlog.init(name):
        hub = MessageHub.get_instance("bad-values")
        hub.update_scalar("train/loss", 2.0, 2)
        before = hub.get_scalar("train/loss")
        totals, data = before.totals(), before.data
        assert _error_of(lambda: hub.update_scalar("train/loss", value, count)) == expected
        assert _error_of(lambda: hub.get_scalar("train/loss").update(value, count)) == expected
        assert _error_of(lambda: hub.update_scalar("fresh/key", value, count))[0] is expected[0]
        assert _error_of(
            lambda: hub.update_scalars({"train/ok": 1.0, "train/loss": {"value": value, "count": count}})
        )[0] is expected[0]

        after = hub.get_scalar("train/loss")
        assert after.totals() == totals
        np.testing.assert_array_equal(after.data[0], data[0])
        assert set(hub.log_scalars) == {"train/loss"}  # no ring for a refused first value


# -- threads --------------------------------------------------------------------------------


def test_threads_updating_one_key_give_exact_totals(name: str) -> None:
    """4 threads of one process update one key; each gets its own ring, totals are exact."""
    threads_n, updates = 4, 3000
    with shmlog.init(name):
        hub = MessageHub.get_instance("threads")
        barrier = threading.Barrier(threads_n)

        def work(t: int) -> None:
            barrier.wait(TIMEOUT)
            for i in range(updates):
                hub.update_scalar("k", t * 100_000 + i, 1 + t)

        with ThreadPoolExecutor(threads_n) as pool:
            for future in [pool.submit(work, t) for t in range(threads_n)]:
                future.result(TIMEOUT)

        buffer = hub.get_scalar("k")
        totals = buffer.totals()
        assert totals.updates == threads_n * updates
        assert totals.value_sum == sum(
            t * 100_000 + i for t in range(threads_n) for i in range(updates)
        )
        assert totals.count_sum == sum((1 + t) * updates for t in range(threads_n))
        assert (totals.minimum, totals.maximum) == (0, (threads_n - 1) * 100_000 + updates - 1)
        split = buffer.per_writer()
        assert len(split) == threads_n
        assert all(label.startswith("main/thread") for label in split)
        assert sorted(b.totals().updates for b in split.values()) == [updates] * threads_n
        assert len(buffer.data[0]) == threads_n * updates


def test_short_lived_threads_do_not_exhaust_writer_slots(name: str) -> None:
    """Threads that log once and exit, one after another, can go on being started."""
    with shmlog.init(name, capacity=16):
        hub = MessageHub.get_instance("thread-churn")
        for _ in range(1100):
            with ThreadPoolExecutor(1) as pool:
                pool.submit(hub.update_scalar, "k", 1.0).result(TIMEOUT)
        assert hub.get_scalar("k").totals().updates == 1100


# -- restoring a checkpoint into a session ---------------------------------------------------------


def test_restored_history_with_dropped_records_has_no_phantom_records(name: str) -> None:
    """A checkpoint whose totals cover more updates than it kept restores only real records."""
    saved = HistoryBuffer(max_length=100)
    for i in range(500):
        saved.update(i)
    state = {"log_scalars": {"loss": saved}, "runtime_info": {}, "resumed_keys": {"loss": True}}
    with shmlog.init(name):
        hub = MessageHub.get_instance("restore")
        hub.load_state_dict(state)
        restored = hub.get_scalar("loss")
        assert restored.totals() == saved.totals()
        np.testing.assert_array_equal(restored.data[0], saved.data[0])
        np.testing.assert_array_equal(restored.data[1], saved.data[1])
        assert len(restored) == len(saved) == 100
        assert restored.min(100) == saved.min(100) == 400
        assert restored.mean(50) == saved.mean(50)

        hub.update_scalar("loss", 500)  # logging goes on after the restored records
        assert restored.data[0].tolist() == list(map(float, range(400, 501)))
        assert restored.totals().updates == 501


def test_history_as_of_a_past_time_when_the_writer_is_far_ahead(name: str) -> None:
    """The log writer's view "as of a marker" stays exact however many updates followed it."""
    import time as _time

    with shmlog.init(name, log_writer="none") as session:
        hub = MessageHub.get_instance("asof")
        for i in range(10):
            hub.update_scalar("k", float(i))
        until = _time.monotonic_ns()
        for i in range(10, 300):
            hub.update_scalar("k", float(i))
        past = session.hub("asof").log_scalars(until=until)["k"]
        assert past.totals().updates == 10
        assert past.totals().value_sum == sum(range(10))
        assert past.current() == 9.0
        assert past.mean(4) == (6 + 7 + 8 + 9) / 4
        assert (past.min(), past.max()) == (0.0, 9.0)
        assert list(past.data[0]) == [float(i) for i in range(10)]
        now = hub.get_scalar("k")
        assert now.totals().updates == 300

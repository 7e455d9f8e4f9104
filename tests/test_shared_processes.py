"""Scalars and runtime info shared between processes of one session.

Children started by fork, spawn and forkserver join without calling
``shmlog.init``; independent programs join by name; readers race writers.
Every wait is bounded and every child's exit code is checked.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest
from _shared_workers import (
    TIMEOUT,
    child_env,
    child_values,
    count_up,
    expect_line,
    info_round_trip,
    join_all,
    log_forever,
    log_n,
    log_sequence,
    popen_python,
    rewrite_options,
    shm_entries,
    stop_forkserver,
    wait_then_log,
)

import shmlog
from shmlog import MessageHub
from shmlog.shm.codec import MAX_INFO_BYTES
from shmlog.shm.scalar_rings import RingReader

pytestmark = pytest.mark.timeout(60)

METHODS = ["fork", "spawn", "forkserver"]


# -- children of every start method -----------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_children_updates_merge_exactly(name: str, method: str) -> None:
    """Every child's updates reach the parent: exact totals, data and one ring per child."""
    children, updates = 3, 500
    with shmlog.init(name):
        ctx = multiprocessing.get_context(method)  # a forkserver may predate this session
        barrier = ctx.Barrier(children)
        procs = [
            ctx.Process(target=log_sequence, args=("procs", "loss", i, updates, barrier))
            for i in range(children)
        ]
        for p in procs:
            p.start()
        join_all(procs)

        buffer = MessageHub.get_instance("procs").get_scalar("loss")
        expected = [child_values(i, updates) for i in range(children)]
        all_values = np.concatenate([v for v, _ in expected])
        all_counts = np.concatenate([c for _, c in expected])

        totals = buffer.totals()
        assert totals.updates == children * updates
        assert totals.value_sum == all_values.sum()
        assert totals.count_sum == all_counts.sum()
        assert buffer.mean() == all_values.sum() / all_counts.sum()
        assert buffer.min() == 0.0
        assert buffer.max() == (children - 1) * 1_000_000 + updates - 1
        values, counts = buffer.data
        assert len(buffer) == len(values) == children * updates
        assert sorted(values.tolist()) == sorted(all_values.tolist())
        assert counts.sum() == all_counts.sum()

        split = buffer.per_writer()
        assert set(split) == {f"pid{p.pid}" for p in procs}
        for i, p in enumerate(procs):
            mine = split[f"pid{p.pid}"]
            want_values, want_counts = expected[i]
            got_values, got_counts = mine.data
            assert got_values.tolist() == want_values  # each writer's order is kept
            assert got_counts.tolist() == want_counts
            t = mine.totals()
            assert (t.updates, t.value_sum, t.count_sum) == (
                updates, sum(want_values), sum(want_counts),
            )
            assert (t.minimum, t.maximum) == (want_values[0], want_values[-1])


def test_forkserver_started_before_init_finds_the_session(name: str) -> None:
    """A forkserver that was already running (e.g. an earlier DataLoader) still joins children."""
    stop_forkserver()
    ctx = multiprocessing.get_context("forkserver")
    warmup = ctx.Process(target=os.getpid)
    warmup.start()
    join_all([warmup])
    with shmlog.init(name):
        child = ctx.Process(target=log_n, args=("late", "k", 1.0, 1.0, 5, None))
        child.start()
        join_all([child])
        assert MessageHub.get_instance("late").get_scalar("k").totals().updates == 5


def test_forkserver_children_running_across_init_and_close_stay_alive(name: str) -> None:
    """A forkserver child (a persistent DataLoader worker, say) lives on through init and close."""
    stop_forkserver()
    ctx = multiprocessing.get_context("forkserver")
    started, go = ctx.Event(), ctx.Event()
    # The child gives up after 10 s, so a parent blocked on it in init() is released.
    child = ctx.Process(target=wait_then_log, args=("across", started, go, 10.0))
    child.start()
    try:
        assert started.wait(TIMEOUT)
        with shmlog.init(name):
            assert child.is_alive(), "a running forkserver child looks dead after init()"
        assert child.is_alive(), "a running forkserver child looks dead after close()"
        go.set()
        join_all([child])
    finally:
        go.set()
        child.join(TIMEOUT)


# -- independent programs joining by name ---------------------------------------------

RANK_SCRIPT = r"""
import os, sys
import shmlog
from shmlog import MessageHub

rank = int(os.environ["RANK"])
with shmlog.init(sys.argv[1]):
    hub = MessageHub.get_instance("ranks")
    for i in range(100):
        hub.update_scalar("loss", rank * 1000 + i)
    print("logged", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "read":
            t = hub.get_scalar("loss").totals()
            labels = sorted(hub.get_scalar("loss").per_writer())
            print("totals", t.updates, int(t.value_sum), ",".join(labels), flush=True)
        elif command == "write":
            hub.update_scalar("loss", 5000.0)
            print("written", flush=True)
        elif command == "quit":
            break
print("closed", flush=True)
"""


def test_ranks_join_by_name_and_last_member_unlinks(name: str) -> None:
    """Ranks that init the same name share one hub; the session outlives its creator."""
    session = shmlog.init(name)
    ranks = []
    try:
        try:
            hub = MessageHub.get_instance("ranks")
            for i in range(10):
                hub.update_scalar("loss", 100_000 + i)
            ranks = [
                popen_python(RANK_SCRIPT, name, env=child_env(RANK=str(r))) for r in range(3)
            ]
            for proc in ranks:
                expect_line(proc, "logged")
            buffer = hub.get_scalar("loss")
            split = buffer.per_writer()
            assert set(split) == {"main", "rank0", "rank1", "rank2"}
            for r in range(3):
                t = split[f"rank{r}"].totals()
                assert (t.updates, t.value_sum) == (100, sum(r * 1000 + i for i in range(100)))
            expected_sum = sum(100_000 + i for i in range(10)) + sum(
                r * 1000 + i for r in range(3) for i in range(100)
            )
            assert buffer.totals().updates == 310
            assert buffer.totals().value_sum == expected_sum
            assert len(session.shared.control.live_members()) == 4
        finally:
            session.close()  # the creator leaves first

        assert "ctl" in shm_entries(name), "session unlinked while members still live"
        ranks[0].stdin.write("write\n")
        ranks[0].stdin.flush()
        expect_line(ranks[0], "written")
        # A rank reads its own rank's records (the creator had no rank, so it
        # read everyone's); per_writer() still lists every writer.
        for rank, updates, total in ((0, 101, 4950 + 5000), (1, 100, 100_000 + 4950)):
            ranks[rank].stdin.write("read\n")
            ranks[rank].stdin.flush()
            line = expect_line(ranks[rank], "totals")
            assert line.split() == ["totals", str(updates), str(total), "main,rank0,rank1,rank2"]
        for proc in ranks[:2]:
            out, err = proc.communicate("quit\n", timeout=TIMEOUT)
            assert proc.returncode == 0, err
            assert "closed" in out
        assert "ctl" in shm_entries(name), "session unlinked while rank2 still lives"
        out, err = ranks[2].communicate("quit\n", timeout=TIMEOUT)
        assert ranks[2].returncode == 0, err
        assert shm_entries(name) == [], "the last member left its segments behind"
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)


MEMBER_EXIT_SCRIPT = r"""
import signal, sys
import shmlog
from shmlog import MessageHub

how = sys.argv[2]
if how == "sigterm-chained":
    def handler(signum, frame):
        print("handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)
shmlog.init(sys.argv[1])
MessageHub.get_instance("exit").update_scalar("k", 1.0)
MessageHub.get_instance("exit").update_info("i", 1)
print("ready", flush=True)
sys.stdin.readline()
if how == "exception":
    raise RuntimeError("training failed")
"""


@pytest.mark.parametrize(
    ("how", "returncode"),
    [("return", 0), ("exception", 1), ("sigterm", -signal.SIGTERM), ("sigterm-chained", 3)],
)
def test_last_member_unlinks_however_it_ends(name: str, how: str, returncode: int) -> None:
    """A member that never calls close() still removes the session: at exit, on error, on SIGTERM."""
    proc = popen_python(MEMBER_EXIT_SCRIPT, name, how)
    try:
        expect_line(proc, "ready")
        assert {"ctl", "r0", "i0"} <= set(shm_entries(name))
        if how.startswith("sigterm"):
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate("go\n", timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == returncode, err
    assert ("handler ran" in out) == (how == "sigterm-chained")
    assert shm_entries(name) == [], f"left behind after {how}"


# -- runtime info ----------------------------------------------------------------------


def test_runtime_info_round_trip_with_spawn_child(name: str) -> None:
    """Info set in one process is read in another, both ways; pop and moves are seen."""
    with shmlog.init(name):
        hub = MessageHub.get_instance("info")
        cfg = {"lr": 0.1, "layers": [1, 2, 3], "name": "run", "blob": b"\x00\x01", "none": None}
        hub.update_info("cfg", cfg)
        hub.update_info("grow", "small")
        ctx = multiprocessing.get_context("spawn")
        parent, child_end = ctx.Pipe()
        child = ctx.Process(target=info_round_trip, args=("info", child_end))
        child.start()
        try:
            assert parent.poll(TIMEOUT)
            assert parent.recv() == ("cfg", cfg)
            assert parent.poll(TIMEOUT)
            assert parent.recv() == ("set", None)
            seen = hub.get_info("from_child")
            assert seen["pid"] == child.pid
            assert seen["t"] == (1, "a")
            np.testing.assert_array_equal(seen["array"], np.arange(4.0))

            # The child reads "grow" (caching where it lives), then it outgrows its slot.
            parent.send("grow")
            assert parent.recv() == ("grow", "small")
            big = "x" * 300_000
            hub.update_info("grow", big)
            parent.send("grow")
            assert parent.recv() == ("grow", big)

            assert hub.pop_info("cfg") == cfg
            assert hub.get_info("cfg") is None
            assert hub.pop_info("cfg", "default") == "default"
            parent.send("cfg")
            assert parent.recv() == ("cfg", "<missing>")
            assert set(hub.runtime_info) == {"from_child", "grow"}
            parent.send("quit")
        finally:
            join_all([child])


def test_runtime_info_refuses_unshareable_values(name: str) -> None:
    """Unsupported or oversized info raises an error naming the key and stores nothing."""
    with shmlog.init(name):
        hub = MessageHub.get_instance("info-bad")
        hub.update_info("kept", 1)
        with pytest.raises(TypeError, match="'bad_key'"):
            hub.update_info("bad_key", object())
        with pytest.raises(TypeError, match="'nested_key'"):
            hub.update_info("nested_key", {"a": [1, {2, 3}]})
        with pytest.raises(TypeError, match="'kept'"):
            hub.update_info("kept", lambda: None)
        with pytest.raises(ValueError, match="'huge_key'"):
            hub.update_info("huge_key", b"x" * (MAX_INFO_BYTES + 1))
        assert dict(hub.runtime_info) == {"kept": 1}


# -- a reader racing a writer --------------------------------------------------------------


def _racing_writer(name: str, capacity: int):
    """A session of ``capacity`` records per ring and a child counting up in hub 'race'."""
    session = shmlog.init(name, capacity=capacity)
    ctx = multiprocessing.get_context("fork")
    started, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=count_up, args=("race", "n", started, stop))
    writer.start()
    return session, writer, started, stop


def _force_fences(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the barriers that protect CPUs without TSO ordering, here too."""
    from shmlog.shm import fence as fence_module
    from shmlog.shm import info, record_rings, scalar_rings

    monkeypatch.setenv("SHMLOG_FENCE", "1")
    barrier = fence_module._make_fence()
    assert barrier is not None
    for module, attr in ((scalar_rings, "fence"), (scalar_rings, "_fence"), (info, "fence"),
                         (record_rings, "fence")):
        monkeypatch.setattr(module, attr, barrier)


@pytest.mark.parametrize("fenced", [False, True], ids=["tso", "fenced"])
@pytest.mark.filterwarnings("ignore:.*window_size 10 is longer:UserWarning")
def test_reader_racing_writer_sees_consistent_snapshots(
    name: str, fenced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every lock-free read is a published state: exact totals, consecutive records.

    ``fenced`` runs writer and reader with the barriers used on other CPUs.
    """
    if fenced:
        _force_fences(monkeypatch)
    min_reads, max_reads, min_states = 2000, 50_000, 100
    capacity = 64
    session, writer, started, stop = _racing_writer(name, capacity)
    with session:
        try:
            assert started.wait(TIMEOUT)
            hub = MessageHub.get_instance("race")
            live = hub.get_scalar("n")
            seen_updates: set[int] = set()
            reads = 0
            while reads < min_reads or (len(seen_updates) < min_states and reads < max_reads):
                reads += 1
                buffer = live if reads % 2 else hub.get_scalar("n")
                t = buffer.totals()
                n = t.updates
                seen_updates.add(n)
                assert t.value_sum == n * (n - 1) / 2, (n, t)
                assert t.count_sum == n
                assert (t.minimum, t.maximum) == (0, n - 1)

                values, counts = buffer.data
                assert 0 < len(values) <= capacity
                last = values[-1]
                assert last >= n - 1
                np.testing.assert_array_equal(values, np.arange(last - len(values) + 1, last + 1))
                assert np.all(counts == 1.0)

                assert 0 < len(buffer) <= capacity  # records retained, never "none"
                window = buffer.mean(10)
                assert float(window - 4.5).is_integer() and window >= n - 1 - 4.5
                assert float(buffer.max(10)).is_integer() and buffer.max(10) >= n - 1
            assert len(seen_updates) >= min_states, "the writer barely moved during the reads"
        finally:
            stop.set()
            join_all([writer])
        final = hub.get_scalar("n").totals()
        assert final.value_sum == final.updates * (final.updates - 1) / 2


def test_full_history_reads_finish_while_writer_runs(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying a whole large ring never retries endlessly behind a writer that never pauses."""
    capacity, max_reads = 4096, 20_000
    attempts = [0]
    totals = RingReader.totals

    def counted(self):
        attempts[0] += 1
        if attempts[0] > 10 * max_reads:
            raise AssertionError("a reader keeps copying the same ring again")
        return totals(self)

    session, writer, started, stop = _racing_writer(name, capacity)
    with session:
        try:
            assert started.wait(TIMEOUT)
            buffer = MessageHub.get_instance("race").get_scalar("n")
            while buffer.totals().updates < 2 * capacity:
                pass
            first = buffer.totals().updates
            monkeypatch.setattr(RingReader, "totals", counted)
            reads = 0
            # Until the writer has lapped the ring a few times during the reads.
            while reads < max_reads and (reads < 40 or totals(buffer.storage._rings[0])[0]
                                         < first + 3 * capacity):
                reads += 1
                values, _counts = buffer.data
                assert 0 < len(values) <= capacity
                assert values[-1] - values[0] == len(values) - 1
            monkeypatch.undo()
            assert buffer.totals().updates >= first + 3 * capacity, "the writer never ran"
            assert attempts[0] <= 2 * reads, f"{attempts[0]} ring copies for {reads} reads"
        finally:
            stop.set()
            join_all([writer])


def test_options_read_while_another_process_rewrites_them(name: str) -> None:
    """A new key's capacity lookup never decodes half of another process's options rewrite."""
    with shmlog.init(name, capacity=64) as session:
        ctx = multiprocessing.get_context("fork")
        started, stop = ctx.Event(), ctx.Event()
        child = ctx.Process(target=rewrite_options, args=(started, stop))
        child.start()
        try:
            assert started.wait(TIMEOUT)
            for _ in range(10_000):
                assert session.capacity_of("other/key") == 64
        finally:
            stop.set()
            join_all([child])


# -- a forked child gets its own rings ------------------------------------------------------


def test_forked_child_never_writes_into_parent_rings(name: str) -> None:
    """After fork the child claims its own writer slot and rings; the parent's stay intact."""
    with shmlog.init(name):
        hub = MessageHub.get_instance("fork")
        for i in range(10):
            hub.update_scalar("k", i)  # the parent's ring writer is now cached
        before = hub.get_scalar("k").per_writer()["main"].totals()

        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=log_n, args=("fork", "k", 100.0, 2.0, 7, None))
        child.start()
        join_all([child])

        split = hub.get_scalar("k").per_writer()
        assert set(split) == {"main", f"pid{child.pid}"}
        assert split["main"].totals() == before
        assert split["main"].data[0].tolist() == list(map(float, range(10)))
        mine = split[f"pid{child.pid}"].totals()
        assert (mine.updates, mine.value_sum, mine.count_sum) == (7, 700.0, 14.0)

        hub.update_scalar("k", 10)  # the parent carries on in its own ring
        after = hub.get_scalar("k").per_writer()["main"].totals()
        assert (after.updates, after.value_sum) == (11, sum(range(11)))
        assert hub.get_scalar("k").totals().updates == 18


def test_child_killed_by_sigterm_leaves_parent_session_alive(name: str) -> None:
    """A forked child's SIGTERM handler never unlinks the session its parent still uses."""
    with shmlog.init(name):
        ctx = multiprocessing.get_context("fork")
        ready, running = ctx.Event(), ctx.Event()
        child = ctx.Process(target=log_forever, args=("term", "k", 1.0, 1.0, ready, running))
        child.start()
        assert running.wait(TIMEOUT)
        os.kill(child.pid, signal.SIGTERM)
        child.join(TIMEOUT)
        assert child.exitcode == -signal.SIGTERM
        assert "ctl" in shm_entries(name)
        hub = MessageHub.get_instance("term")
        hub.update_scalar("k", 1.0)
        assert hub.get_scalar("k").totals().updates > 100


"""Device values (CUDA tensors) logged without waiting for the device, on a fake device.

``shmlog.stats.device_fake`` stands in for CUDA: a FakeTensor's copy lands in
its pool slot only when its FakeStream completes it (or the host waits for
it), and its ``item()`` (the blocking read) raises here.  So these tests show,
without a GPU, that nothing reads a device value early or blocks on it, that
values land in logging order with exact totals, that a reader waits only for
what was logged before it, that the staging pool stays bounded, and that a
forked child keeps none of its parent's staged values.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import shmlog
from shmlog import MessageHub
from shmlog.errors import NotAScalar
from shmlog.stats import device_fake as fake
from shmlog.stats.device_values import DEFERRED

pytestmark = pytest.mark.timeout(60)

_names = itertools.count()


@pytest.fixture
def device():
    """A fake device served by the deferral; staged values land and it is removed after."""
    dev = fake.install()
    reports: list[str] = []
    saved_report = DEFERRED.report
    DEFERRED.report = reports.append
    dev.reports = reports
    yield dev
    DEFERRED.report = saved_report
    fake.uninstall(dev)
    assert DEFERRED.stats()["pending"] == 0


def hub() -> MessageHub:
    return MessageHub.get_instance(f"device-test-{os.getpid()}-{next(_names)}")


def tensor(value: float, stream: fake.FakeStream) -> fake.FakeTensor:
    t = fake.FakeTensor(value, stream)
    t.forbid_sync = True  # any blocking read fails the test
    return t


def history(h: MessageHub, key: str) -> list[float]:
    return h._log_scalars[key].data[0].tolist() if key in h._log_scalars else []


def test_values_land_in_logging_order_once_their_copies_complete(device) -> None:
    h, s = hub(), fake.FakeStream()
    h.update_scalar("loss", tensor(3.0, s))
    h.update_scalar("loss", 1.0)  # a float behind a staged value waits its turn
    h.update_scalar("loss", tensor(2.0, s))
    h.update_scalars({"loss": tensor(5.0, s), "acc": 0.5})
    assert history(h, "loss") == []  # nothing was read from the device
    assert history(h, "acc") == [0.5]  # a key without device values is untouched
    s.complete(1)
    DEFERRED.land_ready()
    assert history(h, "loss") == [3.0, 1.0]
    s.complete()
    DEFERRED.land_ready()
    assert history(h, "loss") == [3.0, 1.0, 2.0, 5.0]
    h.update_scalar("loss", 7.0)  # nothing staged any more: lands at once
    assert history(h, "loss") == [3.0, 1.0, 2.0, 5.0, 7.0]
    assert device.waits == []  # completion was only ever checked, never waited for


def test_totals_min_and_max_are_exact_and_counts_may_be_device_values(device) -> None:
    h, s = hub(), fake.FakeStream()
    rng = np.random.default_rng(17)
    values = rng.normal(size=200).tolist() + [1e300, -1e300, 0.5]
    counts = rng.integers(1, 9, size=len(values)).tolist()
    for v, c in zip(values, counts):
        h.update_scalar("x", tensor(v, s), count=tensor(c, s) if c % 2 else c)
    s.complete()
    buffer = h.get_scalar("x")
    totals = buffer.totals()
    assert totals.updates == len(values)
    assert totals.value_sum == sum(values)  # added in logging order, as floats are
    assert totals.count_sum == sum(counts)
    assert (totals.minimum, totals.maximum) == (min(values), max(values))
    assert buffer.data[0].tolist() == values
    assert buffer.data[1].tolist() == [float(c) for c in counts]


def test_a_reader_waits_once_and_only_for_what_was_logged_before_it(device) -> None:
    h, s = hub(), fake.FakeStream()
    for v in (1.0, 2.0, 3.0):
        h.update_scalar("loss", tensor(v, s))
    mark = s.queued[-1][0]
    assert h.get_scalar("loss").data[0].tolist() == [1.0, 2.0, 3.0]
    assert device.waits == [mark]  # one wait, on the newest event before the reader
    h.update_scalar("loss", tensor(4.0, s))
    h.update_scalar("other", tensor(9.0, s))
    assert len(s.queued) == 2  # logged after the reader: still running on the device
    assert DEFERRED.stats()["pending"] == 2
    h.get_scalar("loss")
    assert len(device.waits) == 2  # the next logging step waits once again
    assert history(h, "loss") == [1.0, 2.0, 3.0, 4.0]


def test_a_reader_does_not_wait_for_values_logged_after_it_by_another_thread(device) -> None:
    h, s, later = hub(), fake.FakeStream(), fake.FakeStream("later")
    h.update_scalar("loss", tensor(1.0, s))
    waiting = threading.Event()
    release = threading.Event()
    real_wait = device.wait

    def slow_wait(event):
        waiting.set()
        assert release.wait(10)
        real_wait(event)

    device.wait = slow_wait
    reader = threading.Thread(target=lambda: h.get_scalar("loss"))
    reader.start()
    assert waiting.wait(10)
    # While the reader waits (outside the lock), this thread keeps logging.
    h.update_scalar("loss", tensor(2.0, later))
    release.set()
    reader.join(10)
    assert not reader.is_alive()
    device.wait = real_wait
    assert history(h, "loss") == [1.0]
    assert len(later.queued) == 1  # the reader never completed the later value


def test_the_staging_pool_stays_bounded_and_a_full_pool_is_reported_once(device) -> None:
    DEFERRED.configure(4)
    try:
        h, s = hub(), fake.FakeStream()
        for i in range(10):
            h.update_scalar("loss", tensor(float(i), s))
            assert sum(1 for e in DEFERRED.queue if type(e.value) is not float) <= 4
        stats = DEFERRED.stats()
        assert stats["full_waits"] == 6  # each value past the fourth waited for the oldest
        assert stats["slots"] == 4
        assert len(device.reports) == 1 and "4 slots" in device.reports[0]
        assert history(h, "loss") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        s.complete()
        assert h.get_scalar("loss").data[0].tolist() == [float(i) for i in range(10)]
    finally:
        DEFERRED.configure(4096)


def test_an_invalid_device_count_drops_its_update_and_says_so_once(device) -> None:
    h, s = hub(), fake.FakeStream()
    dropped = DEFERRED.stats()["dropped"]
    h.update_scalar("bad/count", tensor(1.0, s), count=tensor(-1, s))
    h.update_scalar("bad/count", tensor(2.0, s), count=tensor(math.nan, s))
    h.update_scalar("bad/count", tensor(3.0, s))
    s.complete()
    assert h.get_scalar("bad/count").data[0].tolist() == [3.0]
    assert DEFERRED.stats()["dropped"] == dropped + 2
    assert len([r for r in device.reports if "'bad/count'" in r]) == 1


def test_a_device_value_that_is_not_one_number_is_refused_before_anything_is_staged(
        device) -> None:
    h, s = hub(), fake.FakeStream()
    with pytest.raises(NotAScalar, match="'loss'"):
        h.update_scalar("loss", fake.FakeTensor(1.0, s, shape=(2,)))
    with pytest.raises(NotAScalar, match="'loss'"):
        h.update_scalars({"loss": fake.FakeTensor(1.0, s, shape=(3,))})
    assert s.queued == [] and "loss" not in h._log_scalars and "loss" not in h._resumed_keys


def test_cpu_tensors_keep_the_immediate_path(device) -> None:
    h = hub()
    cpu = fake.FakeTensor(2.5, device="cpu")
    h.update_scalar("loss", cpu)
    assert history(h, "loss") == [2.5]
    assert device.staged == 0 and DEFERRED.stats()["pending"] == 0


@pytest.mark.needs_torch
def test_torch_cpu_tensors_are_read_at_once_and_torch_is_not_imported_by_shmlog() -> None:
    code = (
        "import sys, shmlog\n"
        "assert 'torch' not in sys.modules, 'shmlog imported torch'\n"
        "import torch\n"
        "h = shmlog.MessageHub.get_instance('t')\n"
        "h.update_scalar('a', torch.tensor(1.5, dtype=torch.bfloat16))\n"
        "h.update_scalar('a', torch.tensor(7))\n"
        "from shmlog.stats.device_values import DEFERRED\n"
        "assert DEFERRED.stats()['pending'] == 0\n"
        "print(h.get_scalar('a').data[0].tolist())\n"
    )
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.5, 7.0]"


def test_a_forked_child_drops_the_parent_s_staged_values_without_touching_them(device) -> None:
    h, s = hub(), fake.FakeStream()
    h.update_scalar("loss", tensor(1.0, s))
    h.update_scalar("loss", tensor(2.0, s))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            stats = DEFERRED.stats()
            h.update_scalar("loss", 5.0)  # nothing of the parent's is ahead of it
            report = (f"{stats['pending']} {len(device.waits)} {len(s.queued)} "
                      f"{len(device.abandoned)} {history(h, 'loss')}")
            os.write(write, report.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # pending, waits, copies still queued (untouched), pools kept, the child's history
    assert report == "0 0 2 1 [5.0]"
    s.complete()
    assert h.get_scalar("loss").data[0].tolist() == [1.0, 2.0]  # the parent's are intact


def test_the_background_thread_lands_completed_values_without_a_reader(
        device, monkeypatch) -> None:
    landed = threading.Event()
    original = DEFERRED.land_ready

    def land_ready() -> int:
        n = original()
        if n:
            landed.set()
        return n

    monkeypatch.setattr(DEFERRED, "land_ready", land_ready)
    monkeypatch.setattr("shmlog.api.device.LAND_SECONDS", 0.01)
    h, s = hub(), fake.FakeStream()
    h.update_scalar("loss", tensor(4.0, s))
    s.complete()
    assert landed.wait(10)
    assert history(h, "loss") == [4.0]
    assert device.waits == []


def test_in_a_session_values_land_in_the_logging_thread_s_ring(device, name: str) -> None:
    s = fake.FakeStream()
    with shmlog.init(name, log_writer="none"):
        h = hub()
        h.update_scalar("loss", tensor(1.0, s))
        h.update_scalar("loss", 2.0)

        def other_thread() -> None:
            h.update_scalar("loss", tensor(10.0, s))

        t = threading.Thread(target=other_thread)
        t.start()
        t.join(10)
        h.update_scalar("loss", tensor(3.0, s))
        buffer = h.get_scalar("loss")
        assert sorted(buffer.data[0].tolist()) == [1.0, 2.0, 3.0, 10.0]
        rings = buffer.per_writer()
        assert sorted(sorted(r.data[0].tolist()) for r in rings.values()) == [
            [1.0, 2.0, 3.0], [10.0]]
        mine = next(r for r in rings.values() if len(r) == 3)
        assert mine.data[0].tolist() == [1.0, 2.0, 3.0]  # in logging order
        h.update_scalar("loss", tensor(4.0, s))
    # Closing the session landed the last value first.
    assert DEFERRED.stats()["pending"] == 0
    assert s.queued == []


def test_report_progress_waits_once_at_a_logging_step_and_not_between(
        device, name: str) -> None:
    s = fake.FakeStream()
    with shmlog.init(name, log_writer="none", log_interval=5):
        h = MessageHub.get_instance("mmengine")
        for i in range(10):
            h.update_scalar("train/loss", tensor(float(i), s))
            shmlog.report_progress("train", i, iter=i, max_iters=10)
            if i == 3:
                assert device.waits == []  # not a logging step
        # Logging steps at iterations 5 and 10: one wait each.
        assert len(device.waits) == 2
        assert h.get_scalar("train/loss").data[0].tolist()[-1] == 9.0


def test_a_reader_of_another_key_waits_for_nothing(device) -> None:
    h, s = hub(), fake.FakeStream()
    h.update_scalar("loss", tensor(1.0, s))
    h.update_scalar("time", 0.25)  # a float key: never staged
    assert h.get_scalar("time").data[0].tolist() == [0.25]
    assert device.waits == [] and len(s.queued) == 1
    assert h.get_scalar("loss").data[0].tolist() == [1.0]
    assert len(device.waits) == 1


def test_a_report_is_made_after_the_lock_is_released(device) -> None:
    """A logger behind the report may log again; it must not find the lock held."""
    h, s = hub(), fake.FakeStream()
    held = []

    def report(message: str) -> None:
        acquired = DEFERRED.lock.acquire(timeout=5)
        held.append(not acquired)
        if acquired:
            DEFERRED.lock.release()
        device.reports.append(message)

    DEFERRED.report = report
    h.update_scalar("reported", tensor(1.0, s), count=tensor(-1, s))
    s.complete()
    h.get_scalar("reported")
    assert held == [False]


def test_the_log_writer_s_line_shows_the_values_landed_at_its_logging_step(
        device, name: str, tmp_path) -> None:
    """The writer reads the scalars as of the step's time: values landed by the step count."""
    import json

    s = fake.FakeStream()
    cfg = {"window_size": 5, "by_epoch": False}
    with shmlog.init(name, log_writer="thread", log_file=str(tmp_path / "run.log"),
                     log_processor=cfg, log_interval=5, hub=f"lines-{name}",
                     tensorboard=False) as session:
        h = MessageHub.get_instance(f"lines-{name}")
        for i in range(10):
            h.update_scalar("train/loss", tensor(float(i), s))
            shmlog.report_progress("train", i, iter=i, max_iters=10)
        assert session.flush()
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()]
    assert [(row["step"], row["loss"]) for row in rows] == [(5, 2.0), (10, 7.0)]
    assert len(device.waits) == 2

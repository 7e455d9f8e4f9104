"""The metrics endpoint (``shmlog serve``): what a scrape shows, and that it only reads.

Every scrape is parsed with prometheus_client's own parsers, text and
OpenMetrics, and checked against what the hub computes for each writer.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _metrics import closing_new_loggers, same, scrape
from _shared_workers import child_env, forked_writer, join_all

import shmlog
from shmlog import MessageHub, MMLogger
from shmlog.format.exposition import METRICS
from shmlog.wire import PROGRESS_KEY, Progress
from shmlog.writer.metrics import Endpoint

pytest.importorskip("prometheus_client")
pytestmark = pytest.mark.timeout(90)

TIMEOUT = 30.0
HUB = "task"
ODD_KEY = 'odd "key" \\ with ünï'


@pytest.fixture(autouse=True)
def _close_loggers() -> Iterator[None]:
    with closing_new_loggers():
        yield


def session_files(name: str) -> dict[str, bytes]:
    """Every byte of the session's segments, by segment name."""
    start = f"shmlog-{os.getuid()}-{name}@"
    return {e: Path("/dev/shm", e).read_bytes() for e in os.listdir("/dev/shm")
            if e.startswith(start)}


def expected_series(hubs: list[str]) -> dict[tuple[str, str, str], tuple]:
    """(hub, key, writer) -> (updates, value sum, count sum, min, max, current), from the hubs."""
    found = {}
    for hub_name in hubs:
        hub = MessageHub.get_instance(hub_name)
        for key, buffer in hub.log_scalars.items():
            for label, mine in buffer.per_writer().items():
                totals = mine.totals()
                found[(hub_name, key, label)] = (*totals, float(mine.current()))
    return found


def test_a_scrape_shows_every_writers_totals_as_the_hub_has_them_and_writes_nothing(
    name: str,
) -> None:
    with shmlog.init(name, log_writer="none") as session:
        hub = MessageHub.get_instance(HUB)
        for i in range(1, 31):
            hub.update_scalar("train/loss", 1.0 / i)
            hub.update_scalar("train/data_time", 0.25, count=2)
            hub.update_scalar("train/lr", -1e-4 * i)
        hub.update_scalar(ODD_KEY, 3.0)
        hub.update_scalar(ODD_KEY, float("nan"))
        hub.update_info("iter", 120)
        hub.update_info("max_iters", 1000)
        hub.update_info("epoch", 2)
        hub.update_info("max_epochs", 10)
        hub.update_info("eta", 3723.5)
        MessageHub.get_instance("val_hub").update_scalar("val/acc", 0.75)
        with forked_writer([0.5, 1.5, 2.5]):
            expected = expected_series([HUB, "val_hub"])
            before = session_files(name)
            with Endpoint.open(name) as endpoint:
                assert endpoint.host == "127.0.0.1"
                assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
                text = scrape(endpoint.url)
                openmetrics = scrape(endpoint.url, openmetrics=True)
            assert session_files(name) == before  # not one byte stored
            assert len(session.shared.slots()) == 2  # the endpoint claimed no slot

    assert text.content_type.startswith("text/plain")
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.body.endswith("# EOF\n") and "# EOF" not in text.body
    assert ("task", "train/data_time", "worker7") in expected
    assert expected[("task", ODD_KEY, "main")][0] == 2
    for result in (text, openmetrics):
        assert result.types["shmlog_scalar_updates"] == "counter"
        assert result.types["shmlog_scalar_current"] == "gauge"
        assert result.types["shmlog_scalar_value_sum"] == "gauge"
        shown = {dict(labels)["hub"] + "|" + dict(labels)["key"] + "|" + dict(labels)["writer"]
                 for labels in result.series("shmlog_scalar_updates_total")}
        assert shown == {"|".join(ident) for ident in expected}
        for (hub_name, key, writer), values in expected.items():
            updates, value_sum, count_sum, low, high, current = values
            got = {metric: result.scalar(metric, hub_name, key, writer) for metric in (
                "shmlog_scalar_updates_total", "shmlog_scalar_value_sum", "shmlog_scalar_count_sum",
                "shmlog_scalar_min", "shmlog_scalar_max", "shmlog_scalar_current")}
            assert got["shmlog_scalar_updates_total"] == updates
            assert same(got["shmlog_scalar_value_sum"], value_sum)
            assert got["shmlog_scalar_count_sum"] == count_sum
            assert same(got["shmlog_scalar_min"], low)
            assert same(got["shmlog_scalar_max"], high)
            assert same(got["shmlog_scalar_current"], current)
        assert math.isnan(result.scalar("shmlog_scalar_current", HUB, ODD_KEY, "main"))
        assert result.scalar("shmlog_scalar_count_sum", HUB, "train/data_time", "main") == 60
        assert result.scalar("shmlog_scalar_max", HUB, "train/lr", "main") == -1e-4
        # The child wrote its data times after this process wrote its own.
        stamp = "shmlog_scalar_last_update_timestamp_seconds"
        assert (result.scalar(stamp, HUB, "train/data_time", "worker7")
                >= result.scalar(stamp, HUB, "train/data_time", "main"))
        assert result.value("shmlog_progress_iter", hub=HUB) == 120
        assert result.value("shmlog_progress_max_iters", hub=HUB) == 1000
        assert result.value("shmlog_progress_epoch", hub=HUB) == 2
        assert result.value("shmlog_progress_max_epochs", hub=HUB) == 10
        assert result.value("shmlog_progress_eta_seconds", hub=HUB) == 3723.5
        assert ("shmlog_progress_iter", (("hub", "val_hub"),)) not in result.samples
        assert result.value("shmlog_session_info", session=name) == 1
        assert result.value("shmlog_session_members") == 1
        assert result.value("shmlog_session_writers") == 2
        assert result.value("shmlog_session_writers_alive") == 2
        assert result.series("shmlog_writer_alive") == {
            (("writer", "main"),): 1.0, (("writer", "worker7"),): 1.0}
        assert result.value("shmlog_read_duration_seconds") > 0
        assert {n for n, _ in result.samples} <= set(METRICS)


def test_the_registry_knows_the_names_so_a_scrape_can_ask_for_some(name: str) -> None:
    with shmlog.init(name, log_writer="none"):
        MessageHub.get_instance(HUB).update_scalar("train/loss", 2.0)
        with Endpoint.open(name) as endpoint:
            only = scrape(endpoint.url + "?name[]=shmlog_scalar_current&name[]=shmlog_session_members")
    assert set(only.samples) == {
        ("shmlog_scalar_current", (("hub", HUB), ("key", "train/loss"), ("writer", "main"))),
        ("shmlog_session_members", ()),
    }


def test_log_records_dropped_while_the_writer_is_stopped_are_counted(
    name: str, tmp_path: Path
) -> None:
    log_file = str(tmp_path / "run.log")
    with shmlog.init(name, log_file=log_file) as session:
        logger = MMLogger.get_instance(f"metrics-{name}", log_file=log_file)
        logger.info("first")
        assert session.flush(timeout=TIMEOUT)  # the writer is up and idle
        writer = session.writer_pid
        with Endpoint.open(name) as endpoint:
            assert scrape(endpoint.url).series("shmlog_log_records_dropped_total") == {
                (("writer", "main"),): 0.0}
            os.kill(writer, signal.SIGSTOP)
            try:
                for i in range(60):  # 8 KiB each: the 256 KiB ring holds about 30
                    logger.info(f"line {i} " + "x" * 8000)
                stopped = scrape(endpoint.url)
                ring = session.shared.record_consumers()[0]
                dropped, pending = ring.dropped(), ring.pending()
            finally:
                os.kill(writer, signal.SIGCONT)
            assert session.flush(timeout=TIMEOUT)
            resumed = scrape(endpoint.url)
    assert 0 < dropped < 60
    assert stopped.value("shmlog_log_records_dropped_total", writer="main") == dropped
    assert stopped.value("shmlog_log_backlog_bytes", writer="main") == pending > 0
    assert resumed.value("shmlog_log_records_dropped_total", writer="main") == dropped
    assert resumed.value("shmlog_log_backlog_bytes", writer="main") == 0


def _run_writer(worker: int, keys: int, started: object, stop: object) -> None:
    """A DataLoader-like child: logs ``worker + 1`` to each key until ``stop``, then once more."""
    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    hub = MessageHub.get_instance(HUB)
    value = float(worker + 1)
    for key in range(keys):
        hub.update_scalar(f"train/k{key}", value)
    started.release()
    while not stop.is_set():
        for key in range(keys):
            hub.update_scalar(f"train/k{key}", value)
    for key in range(keys):
        hub.update_scalar(f"train/k{key}", value)


@pytest.mark.timeout(120)
def test_scrapes_while_eight_writer_processes_log_are_consistent_and_end_exact(name: str) -> None:
    writers, keys = 8, 4
    ctx = multiprocessing.get_context("fork")
    started, stop = ctx.Semaphore(0), ctx.Event()
    with shmlog.init(name, log_writer="none"):
        children = [ctx.Process(target=_run_writer, args=(w, keys, started, stop))
                    for w in range(writers)]
        for child in children:
            child.start()
        try:
            for _ in children:
                assert started.acquire(timeout=TIMEOUT), "a writer child never started"
            with Endpoint.open(name) as endpoint:
                scrapes = [scrape(endpoint.url, openmetrics=bool(i % 2)) for i in range(6)]
                stop.set()
                join_all(children)
                final = scrape(endpoint.url)
            expected = expected_series([HUB])
        finally:
            stop.set()
            join_all(children)

    labels = {f"worker{w}" for w in range(writers)}
    assert {w for _h, _k, w in expected} == labels
    previous: dict = {}
    for result in scrapes:
        updates = result.series("shmlog_scalar_updates_total")
        assert len(updates) == writers * keys
        assert result.value("shmlog_session_writers_alive") == writers
        for labels_, count in updates.items():
            where = dict(labels_)
            value = float(int(where["writer"][len("worker"):]) + 1)
            assert count >= 1
            # Totals are read whole: sum, counts and extremes agree with the count.
            assert result.value("shmlog_scalar_value_sum", **where) == value * count
            assert result.value("shmlog_scalar_count_sum", **where) == count
            assert result.value("shmlog_scalar_min", **where) == value
            assert result.value("shmlog_scalar_max", **where) == value
            assert result.value("shmlog_scalar_current", **where) == value
            assert count >= previous.get(labels_, 0)  # a counter never goes back
            assert count < expected[(where["hub"], where["key"], where["writer"])][0]
            previous[labels_] = count
    for (hub_name, key, writer), values in expected.items():
        assert final.scalar("shmlog_scalar_updates_total", hub_name, key, writer) == values[0]
        assert final.scalar("shmlog_scalar_value_sum", hub_name, key, writer) == values[1]


def _url_of(proc: subprocess.Popen) -> str:
    ready = select.select([proc.stdout], [], [], TIMEOUT)[0]
    assert ready, "shmlog serve printed no URL"
    line = proc.stdout.readline()
    assert line.startswith("shmlog serve: session "), line
    return line.split()[-1]


@contextlib.contextmanager
def _serve(*args: str) -> Iterator[subprocess.Popen]:
    """``shmlog serve ARGS`` for the block; killed at its end if it is still running."""
    proc = subprocess.Popen([sys.executable, "-m", "shmlog", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _refused(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def test_serve_exits_with_status_0_when_the_session_goes_away(name: str) -> None:
    with shmlog.init(name, log_writer="none") as session:
        MessageHub.get_instance(HUB).update_scalar("train/loss", 0.5)
        with _serve(name, "--port", "0") as proc:
            url = _url_of(proc)
            assert url.startswith("http://127.0.0.1:")
            assert scrape(url).scalar("shmlog_scalar_current", HUB, "train/loss", "main") == 0.5
            session.close()
            _out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert f"shmlog serve: shmlog session {name!r} was closed" in err
    assert "Traceback" not in err
    assert _refused(url)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_with_status_0_on_sigint_and_sigterm(name: str, signum: int) -> None:
    with shmlog.init(name, log_writer="none"):
        MessageHub.get_instance(HUB).update_scalar("train/loss", 0.5)
        with _serve("--port", "0") as proc:  # the only live session of this user
            url = _url_of(proc)
            assert scrape(url).value("shmlog_session_info", session=name) == 1
            proc.send_signal(signum)
            _out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert _refused(url)


def test_serve_refuses_what_it_cannot_serve(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "shmlog", "serve", name], capture_output=True,
                          text=True, env=child_env(), timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert f"shmlog serve: no shmlog session named {name!r}" in done.stderr
    for port in ("70000", "-1", "http"):
        done = subprocess.run([sys.executable, "-m", "shmlog", "serve", name, "--port", port],
                              capture_output=True, text=True, env=child_env(),
                              timeout=TIMEOUT, check=False)
        assert done.returncode == 2
        assert f"expected an int from 0 to 65535 (0: any free port), got {port!r}" in done.stderr
    with shmlog.init(name, log_writer="none"), socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "shmlog", "serve", name, "--port", port],
                              capture_output=True, text=True, env=child_env(),
                              timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert f"shmlog serve: cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(ValueError, match=r"port: expected an int from 0 to 65535 .*got 65536"):
        Endpoint.open(name, port=65536)
    with pytest.raises(ValueError, match=r"host: expected an address or host name, got ''"):
        Endpoint.open(name, host="")


def test_every_nodes_worker_data_time_exchanged_with_the_job_statistics_is_served(
    name: str,
) -> None:
    # What report_progress stores on local rank 0 of the logging node after a
    # step whose LogProcessor config has reduce entries.
    workers = {"node0/rank0/worker0": 0.25, "node0/rank1/worker0": 0.5,
               "node1/rank2/worker1": 1.75}
    progress = Progress("train", 7, 7, 0, None, 100, None, "iter", 0,
                        reduced={"values": {"loss_job": 1.5}, "workers": workers})
    with shmlog.init(name, log_writer="none"):
        hub = MessageHub.get_instance(HUB)
        hub.update_scalar("train/loss", 1.0)
        hub.update_info(PROGRESS_KEY, progress._asdict())
        with Endpoint.open(name) as endpoint:
            result = scrape(endpoint.url)
        done = subprocess.run([sys.executable, "-m", "shmlog", "top", "--json", name],
                              capture_output=True, text=True, env=child_env(),
                              timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
    assert result.series("shmlog_job_worker_data_time_seconds") == {
        (("hub", HUB), ("worker", label)): value for label, value in workers.items()}
    assert result.value("shmlog_progress_iter", hub=HUB) == 7
    assert document["progress"][HUB]["job_workers"] == workers


def test_without_job_statistics_no_job_worker_series_is_served(name: str) -> None:
    progress = Progress("train", 7, 7, 0, None, 100, None, "iter", 0)
    with shmlog.init(name, log_writer="none"):
        MessageHub.get_instance(HUB).update_info(PROGRESS_KEY, progress._asdict())
        with Endpoint.open(name) as endpoint:
            result = scrape(endpoint.url)
    assert result.series("shmlog_job_worker_data_time_seconds") == {}
    assert result.value("shmlog_progress_iter", hub=HUB) == 7


def _listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port`` (``ss``: Send-Q of a LISTEN socket)."""
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                           timeout=30, check=True).stdout.split()
    return int(shown[2])


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2)")
def test_the_endpoint_queues_a_hundred_scrapers_arriving_together(name: str) -> None:
    with shmlog.init(name, log_writer="none"):
        MessageHub.get_instance(HUB).update_scalar("train/loss", 2.0)
        with Endpoint.open(name) as endpoint:
            assert _listen_backlog(endpoint.port) >= 128
            # And they are all answered.
            with ThreadPoolExecutor(100) as pool:
                answers = list(pool.map(lambda _i: scrape(endpoint.url), range(100)))
    assert all(("shmlog_session_members", ()) in a.samples for a in answers)

"""``shmlog.init(metrics_port=...)``: the log writer serves the session's metrics for the run.

The endpoint lives in whichever process writes the logs: the sidecar, a
member's thread, or the member that took over from a writer that died.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _metrics import closing_new_loggers, scrape, wait_gone
from _shared_workers import child_env, parse_ls

import shmlog
from shmlog import MessageHub, MMLogger
from shmlog.shm import codec
from shmlog.wire import METRICS_KEY

pytest.importorskip("prometheus_client")
pytestmark = pytest.mark.timeout(90)

TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _close_loggers() -> Iterator[None]:
    with closing_new_loggers():
        yield


def published(session: shmlog.Session) -> dict:
    raw = session.shared.info_get(METRICS_KEY)
    assert raw is not None, "no metrics endpoint published"
    return codec.decode(raw)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ls_metrics(name: str) -> str:
    done = subprocess.run([sys.executable, "-m", "shmlog", "ls"], capture_output=True, text=True,
                          env=child_env(), timeout=TIMEOUT, check=True)
    return parse_ls(done.stdout)[name]["METRICS"]


def test_the_sidecar_serves_the_run_and_publishes_where(name: str) -> None:
    with shmlog.init(name, metrics_port=0) as session:
        assert session.options["metrics_port"] == 0
        assert session.options["metrics_host"] == "127.0.0.1"
        hub = MessageHub.get_instance("mmengine")
        for i in range(1, 11):
            hub.update_scalar("train/loss", 1.0 / i)
        hub.update_info("iter", 9)
        url = session.metrics_url(timeout=TIMEOUT)
        assert url is not None and url.startswith("http://127.0.0.1:")
        where = published(session)
        assert where["pid"] == session.writer_pid != os.getpid()  # the sidecar serves
        assert url == where["url"] == f"http://127.0.0.1:{where['port']}/metrics"
        assert where["port"] != 0
        result = scrape(url)
        buffer = hub.get_scalar("train/loss")
        assert result.scalar("shmlog_scalar_updates_total", "mmengine", "train/loss", "main") == 10
        assert result.scalar("shmlog_scalar_value_sum", "mmengine", "train/loss", "main") == (
            buffer.totals().value_sum)
        assert result.scalar("shmlog_scalar_current", "mmengine", "train/loss", "main") == 0.1
        assert result.value("shmlog_progress_iter", hub="mmengine") == 9
        assert scrape(url, openmetrics=True).value("shmlog_session_members") == 1
        assert ls_metrics(name) == url
    assert wait_gone(where["pid"])  # the sidecar exits once nobody is left
    assert refused(where["port"])


def test_a_thread_writer_serves_and_its_forked_children_keep_no_socket(name: str) -> None:
    """The member writing the logs forks: the child must not keep the port listening."""
    port = free_port()
    with shmlog.init(name, log_writer="thread", metrics_port=port) as session:
        MessageHub.get_instance("mmengine").update_scalar("train/loss", 2.0)
        url = session.metrics_url(timeout=TIMEOUT)
        assert url == f"http://127.0.0.1:{port}/metrics"
        assert published(session)["pid"] == os.getpid()
        assert scrape(url).value("shmlog_session_writers") == 1
        stop_r, stop_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(stop_w)
                select.select([stop_r], [], [])
            finally:
                os._exit(0)
        os.close(stop_r)
        try:
            assert scrape(url).value("shmlog_session_members") == 1
            session.close()
            assert refused(port)  # the child, still running, holds no copy of the socket
        finally:
            os.close(stop_w)
            os.waitpid(child, 0)


def test_a_successor_writer_serves_on_the_same_port(name: str, tmp_path: Path) -> None:
    """The sidecar is killed: this member's standby takes the writing over, and the endpoint."""
    port = free_port()
    log_file = str(tmp_path / "run.log")
    with shmlog.init(name, log_file=log_file, metrics_port=port) as session:
        hub = MessageHub.get_instance("mmengine")
        hub.update_scalar("train/loss", 1.5)
        url = session.metrics_url(timeout=TIMEOUT)
        assert url == f"http://127.0.0.1:{port}/metrics"
        sidecar = published(session)["pid"]
        assert sidecar == session.writer_pid != os.getpid()
        assert scrape(url).value("shmlog_session_info", session=name) == 1
        os.kill(sidecar, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT
        while published(session)["pid"] != os.getpid() and time.monotonic() < deadline:
            time.sleep(0.01)  # until this process has bound the port and said so
        assert published(session)["pid"] == session.writer_pid == os.getpid()
        assert session.metrics_url() == url
        hub.update_scalar("train/loss", 2.5)
        result = scrape(url)
        assert result.scalar("shmlog_scalar_updates_total", "mmengine", "train/loss", "main") == 2
        assert result.scalar("shmlog_scalar_current", "mmengine", "train/loss", "main") == 2.5
        logger = MMLogger.get_instance(f"metrics-{name}", log_file=log_file)
        logger.info("written by the successor")
        assert session.flush(timeout=TIMEOUT)
    assert refused(port)
    assert "written by the successor" in (tmp_path / "run" / "run.log").read_text()


def test_a_writer_that_cannot_bind_says_so_keeps_writing_and_serves_once_it_can(
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_file = str(tmp_path / "run.log")
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with shmlog.init(name, log_writer="thread", log_file=log_file,
                         metrics_port=port) as session:
            logger = MMLogger.get_instance(f"metrics-{name}", log_file=log_file)
            logger.info("logging goes on")
            assert session.flush(timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while "cannot serve metrics" not in capfd.readouterr().err:
                assert time.monotonic() < deadline, "the writer never said it cannot bind"
                time.sleep(0.01)
            assert session.metrics_url() is None
            taken.close()
            url = session.metrics_url(timeout=TIMEOUT)  # it tries again every second
            assert url == f"http://127.0.0.1:{port}/metrics"
            assert scrape(url).value("shmlog_session_members") == 1
        assert "logging goes on" in (tmp_path / "run" / "run.log").read_text()
    finally:
        taken.close()


def test_metrics_options_are_checked_when_init_is_called(name: str) -> None:
    for bad in (-1, 65536, 1.5, "9100", True):
        with pytest.raises(ValueError, match=rf"metrics_port: expected an int from 0 to 65535 "
                                             rf"\(0: any free port\), got {bad!r}"):
            shmlog.init(name, metrics_port=bad)
    with pytest.raises(TypeError, match="metrics_host: expected a str"):
        shmlog.init(name, metrics_port=0, metrics_host=None)
    with pytest.raises(ValueError, match="metrics_host: expected an address or host name, got ''"):
        shmlog.init(name, metrics_port=0, metrics_host="")
    with pytest.raises(ValueError, match="log_writer='none' has none; .*'shmlog serve'"):
        shmlog.init(name, metrics_port=0, log_writer="none")
    assert not any(e.startswith(f"shmlog-{os.getuid()}-{name}@") for e in os.listdir("/dev/shm"))
    with shmlog.init(name) as session:  # no metrics_port: nobody serves
        assert session.options["metrics_port"] is None
        assert session.flush(timeout=TIMEOUT)  # the writer is up
        assert session.metrics_url() is None
        assert session.shared.info_get(METRICS_KEY) is None

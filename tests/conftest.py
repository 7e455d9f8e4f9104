"""Suite-wide guarantees: every test leaves /dev/shm as it found it.

Leftovers are reported, never deleted here: on a machine where another run
(or a real training job) uses shmlog at the same time, what looks new may be
theirs.  A new session whose creator is alive and not one of this run's
processes is theirs and is not counted; one whose creator is gone is.
``shmlog clean`` removes what really is stale.
"""

from __future__ import annotations

import os
import sys

import pytest

SHM = "/dev/shm"


def _shmlog_entries() -> set[str]:
    """The names in /dev/shm that shmlog could have made: ``shmlog-<uid>-<session>@<part>``."""
    try:
        return {e for e in os.listdir(SHM) if e.startswith("shmlog-") and "@" in e}
    except OSError:
        return set()


def _parent(pid: int) -> int | None:
    from shmlog.shm.liveness import proc_stat

    fields = proc_stat(pid)
    return None if fields is None else int(fields[1])


def _someone_elses(entry: str) -> bool:
    """Whether ``entry`` belongs to a session another live process tree created."""
    from shmlog.shm.control import Control
    from shmlog.shm.segment import KIND_CONTROL, Segment

    ctl = "/" + entry[: entry.rindex("@")] + "@ctl"
    try:
        segment = Segment.attach(ctl, KIND_CONTROL)
    except Exception:  # noqa: BLE001 (gone or unreadable: count it)
        return False
    try:
        creator = Control(segment).read_state().creator
    finally:
        segment.close()
    pid, me = creator, os.getpid()
    while pid and pid != me:
        pid = _parent(pid)
    return pid != me and _parent(creator) is not None  # alive, and not ours


def _leaked(before: set[str]) -> list[str]:
    return sorted(e for e in _shmlog_entries() - before if not _someone_elses(e))


_before_session: set[str] = set()


@pytest.fixture
def name() -> str:
    """A session name no other test (or concurrent run) uses."""
    from _shared_workers import unique_name

    return unique_name()


@pytest.fixture(autouse=True)
def _no_inherited_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start outside any session, rank or DataLoader worker, whatever the shell set."""
    for var in ("RANK", "SHMLOG_WORKER_ID", "SHMLOG_SESSION", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _hubs_start_empty():
    """Each test's hubs start empty, as in a new process.

    A hub keeps what a session held after it closes, and brings what it
    holds into the next session this process opens: without this, a test
    would see the scalars of the tests before it.
    """
    from shmlog import MessageHub

    for hub in list(MessageHub._instance_dict.values()):
        hub._log_scalars.clear()
        hub._runtime_info.clear()
        hub._resumed_keys.clear()


@pytest.fixture
def single_process_env(monkeypatch: pytest.MonkeyPatch):
    """No rank or session in this process's environment; MMLoggers made here are closed."""
    from shmlog import MMLogger

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SHMLOG_WORKER_ID", "SHMLOG_SESSION",
                "TORCHELASTIC_RUN_ID", "SHMLOG_SHARED_STORAGE", "NNODES"):
        monkeypatch.delenv(var, raising=False)
    before = set(MMLogger._instance_dict)
    yield
    for key in set(MMLogger._instance_dict) - before:
        logger = MMLogger._instance_dict.pop(key)
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)


@pytest.fixture
def mmengine_not_in_use():
    """The test runs as in a process that does not use MMEngine, whatever the suite imported.

    HistoryBuffers pickle as MMEngine's own class in processes that imported
    ``mmengine.logging.history_buffer`` (``shmlog.stats.portable``).
    """
    name = "mmengine.logging.history_buffer"
    saved = sys.modules.get(name, _ABSENT)
    sys.modules[name] = None  # type: ignore[assignment]  # "not imported" to sys.modules.get
    yield
    if saved is _ABSENT:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = saved


_ABSENT = object()


def pytest_sessionstart(session: pytest.Session) -> None:
    # The processes a test starts stand for the ranks of one job started by
    # hand: they join each other's sessions by name.  Tests of jobs kept apart
    # give their processes other values (or none).
    os.environ.setdefault("SHMLOG_JOB", f"pytest-{os.getpid()}")
    _before_session.clear()
    _before_session.update(_shmlog_entries())


@pytest.fixture(autouse=True)
def _dev_shm_left_as_found():
    """Fail the test that leaves shmlog segments behind."""
    before = _shmlog_entries()
    yield
    leaked = _leaked(before)
    if leaked:
        pytest.fail(f"test left shared memory behind in {SHM}: {leaked}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = _leaked(_before_session)
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"shared memory left behind in {SHM} by the test run: {sorted(leaked)}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            print(message)


# CI runs the suite without PyTorch and MMEngine, then only the tests marked
# needs_torch with both installed (.ci/run): a test that skips for want of
# them must carry the mark, or it would never run.  With
# SHMLOG_REQUIRE_TORCH=1 (CI's second phase) such a skip is a failure.
_EXTRAS = ("torch", "mmengine")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    reason = str(report.longrepr[2]).lower()
    if not any(extra in reason for extra in _EXTRAS):
        return
    marked = item.get_closest_marker("needs_torch") is not None
    if not marked:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skips for want of torch/mmengine "
                           f"({report.longrepr[2]}) but is not marked needs_torch")
    elif os.environ.get("SHMLOG_REQUIRE_TORCH") == "1":
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped although torch and mmengine should be "
                           f"installed (SHMLOG_REQUIRE_TORCH=1): {report.longrepr[2]}")

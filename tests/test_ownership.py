"""A session is one job's; nested ``init`` is counted; hubs keep the run after ``close``."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest
from _shared_workers import TIMEOUT, child_env, expect_line, popen_python

import shmlog
from shmlog import MessageHub
from shmlog.api import job
from shmlog.api.options import default_name

pytestmark = pytest.mark.timeout(120)

# Holds session argv[1] with 'loss' = argv[2] logged five times until stdin
# closes, then prints its own mean.
HOLDER = """
import sys, shmlog
from shmlog import MessageHub
with shmlog.init(sys.argv[1]):
    hub = MessageHub.get_instance('task')
    for _ in range(5):
        hub.update_scalar('loss', float(sys.argv[2]))
    print('ready', flush=True)
    sys.stdin.read()
    print('mean', hub.get_scalar('loss').mean(), flush=True)
"""

# Asks for session argv[1] (join=argv[3]) and logs 'loss' = argv[2].
JOINER = """
import sys, shmlog
from shmlog import MessageHub
try:
    with shmlog.init(sys.argv[1], join=sys.argv[3] == '1'):
        MessageHub.get_instance('task').update_scalar('loss', float(sys.argv[2]))
        print('joined', flush=True)
except shmlog.JobConflict as exc:
    print('refused', exc, flush=True)
"""


def _unrelated_env() -> dict[str, str]:
    env = child_env()
    env.pop("SHMLOG_JOB", None)
    return env


def _finish(proc) -> str:
    out, err = proc.communicate("", timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out


def test_another_job_asking_for_a_held_name_is_refused_naming_the_holder(name: str) -> None:
    holder = popen_python(HOLDER, name, "1.0", env=_unrelated_env())
    try:
        expect_line(holder, "ready")
        other = popen_python(JOINER, name, "9.0", "0", env=_unrelated_env())
        out = _finish(other)
        assert out.startswith("refused"), out
        assert f"in use by another job: pid {holder.pid} (" in out
        assert "HOLDER" not in out and "import sys, shmlog" in out  # its command line
        assert f"shmlog.init({name!r}, join=True)" in out
        # The holder's statistics are its own.
        assert _finish(holder).splitlines()[-1] == "mean 1.0"
    finally:
        holder.kill()
        holder.wait(TIMEOUT)


def test_a_process_that_says_it_joins_does(name: str) -> None:
    holder = popen_python(HOLDER, name, "1.0", env=_unrelated_env())
    try:
        expect_line(holder, "ready")
        assert _finish(popen_python(JOINER, name, "7.0", "1", env=_unrelated_env())) == "joined\n"
        # Six updates: five of its own and the joined rank's one.
        assert _finish(holder).splitlines()[-1] == "mean 2.0"
    finally:
        holder.kill()
        holder.wait(TIMEOUT)


# Another torchrun launch: runs JOINER as its rank (argv: JOINER's arguments).
OTHER_LAUNCH = """
import subprocess, sys
sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], timeout=60).returncode)
"""


def test_ranks_of_one_torchrun_launch_join_and_another_launch_is_refused(name: str) -> None:
    """Same run id and port ('none', 29500: torchrun's defaults), different agents."""
    env = dict(_unrelated_env(), TORCHELASTIC_RUN_ID="none", MASTER_PORT="29500")
    # This test's process is the agent of the holder's launch.
    holder = popen_python(HOLDER, name, "1.0", env=env)
    try:
        expect_line(holder, "ready")
        assert _finish(popen_python(JOINER, name, "3.0", "0", env=env)) == "joined\n"
        other = _finish(popen_python(OTHER_LAUNCH, JOINER, name, "9.0", "0", env=env))
        assert other.startswith("refused") and f"pid {holder.pid}" in other, other
        assert _finish(holder).splitlines()[-1] == "mean 1.3333333333333333"
    finally:
        holder.kill()
        holder.wait(TIMEOUT)


def test_ranks_of_a_torchrun_launch_share_their_default_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two launches running at once cannot share a master port, so the port sets them apart."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("MASTER_PORT", "29500")
    here = default_name()
    assert here == default_name() and here.startswith("torchrun-none-29500")
    monkeypatch.setenv("MASTER_PORT", "29501")
    assert default_name() != here


def test_job_identity_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHMLOG_JOB", raising=False)
    assert job.job_id().startswith(f"pid:{os.getpid()}:")
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert job.job_id() == "slurm:12.3"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert job.job_id().startswith(f"torchrun:{os.getppid()}:")
    monkeypatch.setenv("SHMLOG_JOB", "mine")
    assert job.job_id() == "env:mine"


def _log_from_child(value: float) -> None:
    MessageHub.get_instance("task").update_scalar("loss", value)


# -- nesting -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["inner", "outer"])
def test_nested_init_is_counted_whichever_handle_closes_first(name: str, first: str) -> None:
    hub = MessageHub.get_instance("task")
    outer = shmlog.init(name)
    inner = shmlog.init(name)
    assert inner is not outer and not inner.closed and inner.name == name
    hub.update_scalar("loss", 1.0)
    (inner if first == "inner" else outer).close()
    # Still in the session: a child's update is seen, as is what came before.
    assert shmlog.current_session() is not None and shmlog.current_session().name == name
    child = multiprocessing.get_context("fork").Process(target=_log_from_child, args=(3.0,))
    child.start()
    child.join(TIMEOUT)
    assert child.exitcode == 0
    assert hub.get_scalar("loss").data[0].tolist() == [1.0, 3.0]
    (outer if first == "inner" else inner).close()
    assert outer.closed and inner.closed
    assert shmlog.current_session() is None
    inner.close()  # closing again does nothing
    outer.close()


def test_nested_with_blocks(name: str) -> None:
    with shmlog.init(name) as outer:
        with shmlog.init(name):
            MessageHub.get_instance("task").update_scalar("loss", 1.0)
        assert not outer.closed
        MessageHub.get_instance("task").update_scalar("loss", 2.0)
        assert MessageHub.get_instance("task").get_scalar("loss").mean() == 1.5
    assert outer.closed


# -- retention -------------------------------------------------------------------------------


def test_hubs_keep_the_run_after_close(name: str) -> None:
    hub = MessageHub.get_instance(f"keep-{name}")
    hub.update_scalar("loss", 100.0)  # before init: part of the session's history
    with shmlog.init(name, capacity=4):
        assert hub.get_scalar("loss").data[0].tolist() == [100.0]
        for i in range(10):
            hub.update_scalar("loss", float(i))
        hub.update_info("epoch", 3)
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_log_in_hub, args=(hub.instance_name, "worker_time", 0.5))
        child.start()
        child.join(TIMEOUT)
        assert child.exitcode == 0
    loss = hub.get_scalar("loss")
    # The retained records, with exact totals over every update.
    assert loss.data[0].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert loss.mean() == pytest.approx((100.0 + sum(range(10))) / 11)
    assert loss.totals().updates == 11
    assert hub.get_scalar("worker_time").current() == 0.5
    assert hub.get_info("epoch") == 3
    saved = hub.state_dict()
    assert saved["log_scalars"]["loss"].totals().updates == 11
    assert saved["runtime_info"]["epoch"] == 3


def test_a_later_session_starts_with_what_was_logged_since_not_the_last_one(name: str) -> None:
    hub = MessageHub.get_instance(f"again-{name}")
    with shmlog.init(name):
        hub.update_scalar("loss", 1.0)
        hub.update_scalar("kept", 5.0)
    hub.update_scalar("loss", 2.0)  # between the sessions
    with shmlog.init(f"{name}-2"):
        assert hub.get_scalar("loss").data[0].tolist() == [1.0, 2.0]
        with pytest.raises(KeyError):
            hub.get_scalar("kept")  # the first session's, untouched since
    assert hub.get_scalar("loss").data[0].tolist() == [1.0, 2.0]


def _log_in_hub(hub_name: str, key: str, value: float) -> None:
    MessageHub.get_instance(hub_name).update_scalar(key, value)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

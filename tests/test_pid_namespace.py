"""A session seen from another PID namespace: a sidecar container of a Kubernetes pod.

Containers of one pod share /dev/shm but not their pids.  From there a
live session's members cannot be checked, so nothing there may declare it
stale, remove it or replace it, while the read-only tools (``ls``,
``top``, ``serve``) work.  ``unshare -p -f --mount-proc`` makes such a
namespace here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from _shared_workers import TIMEOUT, child_env, expect_line, popen_python

from shmlog.shm.session import destroy

MEMBER = r"""
import sys
import shmlog
from shmlog import MessageHub

name = sys.argv[1]
with shmlog.init(name, log_writer="thread") as session:
    hub = MessageHub.get_instance(name)
    hub.update_scalar("train/loss", 1.0)
    print("ready", flush=True)
    sys.stdin.readline()
    hub.update_scalar("train/loss", 3.0)
    assert session.flush()
    print("loss", hub.get_scalar("train/loss").mean(), flush=True)
"""

SIDECAR = r"""
import json, subprocess, sys
import shmlog
from shmlog.errors import SessionError
from shmlog.tools.sessions import clean, list_sessions

name = sys.argv[1]
seen = {}
[info] = [s for s in list_sessions() if s.name == name]
seen["status"], seen["members"] = info.status, info.members
seen["cleaned"] = clean()
seen["cleaned_by_name"] = clean(names=[name], force=True)
named = subprocess.run([sys.executable, "-m", "shmlog", "clean", "--force", name],
                       capture_output=True, text=True, timeout=60)
seen["clean_name"] = (named.returncode, named.stdout, named.stderr)
try:
    shmlog.init(name)
    seen["init"] = "joined"
except SessionError as exc:
    seen["init"] = str(exc)
top = subprocess.run([sys.executable, "-m", "shmlog", "top", name, "--json"],
                     capture_output=True, text=True, timeout=60)
seen["top"] = (top.returncode, top.stdout, top.stderr)
ls = subprocess.run([sys.executable, "-m", "shmlog", "ls"], capture_output=True, text=True,
                    timeout=60)
seen["ls"] = ls.stdout
print(json.dumps(seen), flush=True)
"""


def _pid_namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"],
                           capture_output=True, timeout=TIMEOUT)
    return probe.returncode == 0


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _pid_namespaces_work(), reason="needs root and unshare -p")
def test_a_sidecar_in_another_pid_namespace_reads_the_session_and_never_removes_it(
    name: str,
) -> None:
    member = popen_python(MEMBER, name)
    try:
        expect_line(member, "ready")
        done = subprocess.run(
            ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c",
             textwrap.dedent(SIDECAR), name],
            capture_output=True, text=True, timeout=TIMEOUT * 2, env=child_env(),
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        member.stdin.write("go on\n")
        member.stdin.flush()
        out, err = member.communicate(timeout=TIMEOUT)
    finally:
        if member.poll() is None:
            member.kill()
            member.communicate()
        destroy(name)  # a no-op unless something above failed
    # The live session is neither stale nor removed, nor replaced.
    assert seen["status"].startswith("alive"), seen
    assert seen["members"] == 1
    assert seen["cleaned"] == []
    assert seen["cleaned_by_name"] == []  # named, and with --force, still never taken for dead
    code, stdout, stderr = seen["clean_name"]
    assert (code, stdout) == (1, ""), seen["clean_name"]
    assert f"not removing {name}: its members run in another PID namespace" in stderr
    assert "another PID namespace" in seen["init"], seen["init"]
    assert name in seen["ls"] and "stale" not in seen["ls"], seen["ls"]
    # Read-only tools work there.
    code, stdout, stderr = seen["top"]
    assert code == 0, stderr
    frame = json.loads(stdout)
    assert "train/loss" in json.dumps(frame)
    # And the job went on.
    assert member.returncode == 0, err
    assert out.split() == ["loss", "2.0"]

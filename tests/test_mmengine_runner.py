"""shmlog.mmengine with MMEngine 0.10.7's real Runner: enabled by config alone.

Every run is a program of its own (``tests/_mmengine_run.py``): a toy model,
a dataset whose ``__getitem__`` updates ``train/item_loss`` (rank + 1)
through MMEngine's current MessageHub in 2 DataLoader workers, LoggerHook
every 5 iterations.  Runs, shared by the tests of this module:

* a plain MMEngine run of 1 epoch (no shmlog), whose checkpoint
* a shmlog run in one process resumes, for a second epoch; it pauses before
  iteration 12 while ``shmlog top`` looks at it;
* 2 ranks under torchrun (gloo, CPU), built from ``Config(dict)``, with
  shmlog's LogProcessor as the Runner's.

This test process never imports MMEngine or torch itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _shared_workers import TIMEOUT, child_env

pytestmark = [
    pytest.mark.skipif(
        not (importlib.util.find_spec("torch") and importlib.util.find_spec("mmengine")),
        reason="needs torch and mmengine (pip install -e '.[mmengine]')",
    ),
    pytest.mark.timeout(240),
    pytest.mark.needs_torch,
]

RUN = str(Path(__file__).resolve().parent / "_mmengine_run.py")
RUN_SECONDS = 120
# MMEngine 0.10.7 calls torch.load without weights_only; torch >= 2.6 defaults to True.
ENV = child_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONWARNINGS="ignore")


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True,
                          env=ENV, timeout=RUN_SECONDS, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def run_dir(work_dir: Path) -> Path:
    (found,) = [p for p in work_dir.iterdir() if p.is_dir()]
    return found


def scalars_json(work_dir: Path) -> list[dict]:
    text = (run_dir(work_dir) / "vis_data" / "scalars.json").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plain")
    out = run(str(work), "--epochs", "1")
    # MMEngine alone: what the workers update never reaches the Runner's hub.
    assert "scalars 0 10 0 none" in out.splitlines()
    return work


@pytest.fixture(scope="module")
def single(plain: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shmlog run that resumes ``plain``'s checkpoint; ``shmlog top`` looks at it mid-run."""
    work = tmp_path_factory.mktemp("single")
    proc = subprocess.Popen(
        [sys.executable, RUN, str(work), "--shmlog", "--resume", str(plain / "epoch_1.pth"),
         "--pause-at", "12"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("paused "):
                break
        else:
            pytest.fail("the run ended before it paused: " + "".join(lines[-50:]))
        session = line.split()[1]
        top = subprocess.run([sys.executable, "-m", "shmlog", "top", "--once", session],
                             capture_output=True, text=True, env=child_env(), timeout=TIMEOUT)
        out, err = proc.communicate("go\n", timeout=RUN_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return {"work": work, "stdout": "".join(lines) + out, "top": top.stdout + top.stderr,
            "session": session}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("ranks")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         RUN, str(work), "--shmlog", "--dict", "--shmlog-processor", "--launcher", "pytorch"],
        capture_output=True, text=True, env=ENV, timeout=RUN_SECONDS, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"work": work, "stdout": done.stdout}


def train_lines(text: str) -> list[str]:
    return [line.split(" - INFO - ", 1)[1] for line in text.splitlines()
            if " - INFO - Epoch(train)" in line]


def test_the_iteration_line_shows_worker_scalars_and_worker_data_time(single: dict) -> None:
    lines = train_lines(single["stdout"])
    assert [line.split("  lr:")[0] for line in lines] == [
        "Epoch(train) [2][ 5/10]", "Epoch(train) [2][10/10]"]
    timing = r"  lr: 1\.0000e-01  eta: \d:\d\d:\d\d  time: \d\.\d{4}  data_time: \d\.\d{4}  "
    for line in lines:
        assert re.search(timing, line), line
        # The other values, in the hub's order (resumed keys first).
        rest = sorted(line.split("data_time: ", 1)[1].split("  ")[1:])
        assert [item.split(": ")[0] for item in rest] == ["item_loss", "loss", "worker_data_time"]
        assert "item_loss: 1.0000" in rest and re.fullmatch(r"worker_data_time: \d\.\d{4}", rest[2])


def test_the_log_file_is_where_mmengine_puts_it(single: dict) -> None:
    log_dir = run_dir(single["work"])
    assert sorted(p.name for p in log_dir.iterdir()) == [f"{log_dir.name}.log", "vis_data"]
    text = (log_dir / f"{log_dir.name}.log").read_text()
    assert f"shmlog: logging through session '{single['session']}'" in text
    # The lines after it came through the session's log writer, in order.
    assert train_lines(text) == train_lines(single["stdout"])
    assert text.index("Name of parameter") < text.index("Epoch(train) [2][ 5/10]")


def test_vis_data_has_the_scalars_and_each_workers_data_time(single: dict) -> None:
    rows = scalars_json(single["work"])
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [15, 20]
    for row in logged:
        assert row["item_loss"] == 1.0 and row["worker_data_time"] > 0 and "data_time" in row
    workers = [r for r in rows if "loss" not in r]
    assert [r["step"] for r in workers] == [15, 20]
    for row in workers:
        assert sorted(row) == ["step", "worker_data_time/worker0", "worker_data_time/worker1"]
        assert all(v > 0 for k, v in row.items() if k != "step")


def test_a_plain_mmengine_checkpoint_resumes_with_its_counts(single: dict) -> None:
    # 10 updates of train/loss in the first (plain) epoch, 10 in the resumed one.
    (report,) = [line for line in single["stdout"].splitlines() if line.startswith("scalars ")]
    rank, losses, items, mean = report.split()[1:]
    assert (rank, losses, mean) == ("0", "20", "1.0") and int(items) >= 20


LOAD_WITHOUT_SHMLOG = """
import sys
sys.modules["shmlog"] = None  # shmlog cannot be imported in this process
import torch
hub = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["message_hub"]
loss = hub["log_scalars"]["train/loss"]
workers = hub["log_scalars"]["train/worker_data_time"]
print(type(loss).__module__, len(loss.data[0]), hub["runtime_info"]["iter"],
      type(workers).__name__, float(hub["log_scalars"]["train/item_loss"].mean()))
"""


def test_its_checkpoint_loads_where_shmlog_cannot_be_imported(single: dict) -> None:
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SHMLOG,
                           str(single["work"] / "epoch_2.pth")],
                          capture_output=True, text=True, env=ENV, timeout=RUN_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    # 20 losses (10 of them resumed); iter is RuntimeInfoHook's, set before the 20th.
    assert done.stdout.split() == ["mmengine.logging.history_buffer", "20", "19",
                                   "HistoryBuffer", "1.0"]


def test_shmlog_top_shows_the_running_runner(single: dict) -> None:
    top = single["top"]
    assert f"session {single['session']}" in top
    # In the second epoch (iter 12 of 2 x 10): the epoch its train lines show, [2].
    assert re.search(r"^iter 12/20  epoch 2/2  eta \d:\d\d:\d\d$", top, re.M), top
    rows = {line.split()[0]: line for line in top.splitlines() if line.strip()}
    for key in ("train/worker_data_time", "train/item_loss", "train/loss", "train/data_time"):
        assert key in rows, top
    block = top[top.index("train/worker_data_time"):].splitlines()[1:3]
    assert [row.split()[0] for row in block] == ["worker0", "worker1"], top


def test_two_ranks_stay_apart(ranks: dict) -> None:
    # Both ranks print to one pipe: a report may follow another process's
    # output on the same line.
    reports = sorted(re.findall(r"\bscalars (\d+) (\d+) \d+ (\S+)", ranks["stdout"]))
    # Each rank's hub has its own 10 losses and its own workers' item_loss (rank + 1).
    assert reports == [("0", "10", "1.0"), ("1", "10", "2.0")], ranks["stdout"][-4000:]
    lines = train_lines(ranks["stdout"])
    assert [line.split("  lr:")[0] for line in lines] == [
        "Epoch(train) [1][5/5]", "Epoch(train) [2][5/5]"]
    for line in lines:  # rank 0's lines: rank 0's values, formatted by shmlog's LogProcessor
        assert re.search(r"  eta: \d:\d\d:\d\d  time: \d\.\d{4}  data_time: \d\.\d{4}  "
                         r"item_loss: 1\.0000  worker_data_time: \d\.\d{4}  loss: ", line), line
        # ... and a reduce='mean' entry: the mean over both ranks' windows.
        assert line.endswith("item_loss_job: 1.5000"), line
    workers = [r for r in scalars_json(ranks["work"]) if "loss" not in r]
    assert workers and all(
        sorted(r) == ["step", "worker_data_time/rank0/worker0", "worker_data_time/rank0/worker1"]
        for r in workers)
    log_dir = run_dir(ranks["work"])
    assert sorted(p.name for p in log_dir.iterdir()) == [f"{log_dir.name}.log", "vis_data"]


HUB_CHECKS = """
import numpy as np, shmlog, torch
from mmengine.logging import HistoryBuffer, MessageHub
from shmlog.mmengine import SharedInfo, is_shared, share, unshare

hub = MessageHub.get_instance("checks")
hub.update_scalar("train/a", 1.0)
hub.update_info("cfg", "text")
with shmlog.init("mm-hub-checks-" + str(__import__("os").getpid()), log_writer="none"):
    share(hub)
    assert is_shared(hub) and "train/a" in hub.log_scalars
    hub.update_scalar("train/a", 3.0)  # MMEngine's own method, into the session
    mine = shmlog.MessageHub.get_instance("checks")  # the same storage, shmlog's class
    assert mine.get_scalar("train/a").data[0].tolist() == [1.0, 3.0]
    mine.update_scalar("train/b", 5.0)
    assert hub.get_scalar("train/b").current() == 5.0
    hub.update_info("val/cm", torch.eye(2))  # not plain data: stays in this process
    assert hub.get_info("val/cm").shape == (2, 2) and mine.get_info("val/cm") is None
    assert mine.get_info("cfg") == "text"
    assert isinstance(hub._runtime_info, SharedInfo) and "val/cm" in hub._runtime_info.kept_local
    state = hub.state_dict()
    assert type(state["log_scalars"]["train/a"]).__module__ == "shmlog.stats.history_buffer"
    unshare(hub, HistoryBuffer)
assert type(hub.get_scalar("train/a")) is HistoryBuffer
assert hub.get_scalar("train/a").data[0].tolist() == [1.0, 3.0]
assert sorted(hub.runtime_info) == ["cfg", "val/cm"]
from shmlog.mmengine import ShmlogHook
writers = "['sidecar', 'thread', 'none']"
for bad, words in (({"session": 3}, "session: expected a session name (str) or None, got 3"),
                   ({"log_writer": "x"}, f"log_writer: expected one of {writers}, got 'x'")):
    try:
        ShmlogHook(**bad)
    except (TypeError, ValueError) as exc:
        assert str(exc) == words, exc
    else:
        raise AssertionError(bad)
print("ok")
"""


def test_an_mmengine_hub_shared_and_unshared_outside_a_runner() -> None:
    done = subprocess.run([sys.executable, "-c", HUB_CHECKS], capture_output=True, text=True,
                          env=ENV, timeout=RUN_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


WORKER_INIT = """
import functools, os, shmlog, torch
from torch.utils.data import DataLoader, Dataset
from mmengine.logging import MessageHub
from mmengine.registry import FUNCTIONS
import shmlog.mmengine
from shmlog.mmengine import share, shmlog_worker_init_fn


class Seeds(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        MessageHub.get_current_instance().update_scalar("train/seed", torch.initial_seed())
        return i


assert FUNCTIONS.get("shmlog_worker_init_fn") is shmlog_worker_init_fn
with shmlog.init("mm-worker-init-" + str(os.getpid()), log_writer="none"):
    hub = MessageHub.get_instance("runner-hub")
    share(hub)
    hub.update_info("seed", 7)  # as RuntimeInfoHook stores the Runner's seed
    MessageHub.get_instance("another")  # created later: still not the workers' current hub
    loader = DataLoader(Seeds(), batch_size=2, num_workers=2,
                        worker_init_fn=functools.partial(shmlog_worker_init_fn, hub="runner-hub"))
    assert sum(1 for _ in loader) == 4
    seeds = hub.get_scalar("train/seed").per_writer()
    times = hub.get_scalar("train/worker_data_time").per_writer()
    print(sorted((label, sorted(set(b.data[0].tolist()))) for label, b in seeds.items()),
          sorted((label, b.totals().updates) for label, b in times.items()))
"""


def test_the_worker_init_function_seeds_as_mmengine_does_and_times_batches() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER_INIT], capture_output=True, text=True,
                          env=ENV, timeout=RUN_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    # num_workers * rank + worker_id + seed, with rank 0 and the hub's seed 7.
    assert done.stdout.strip() == ("[('worker0', [7.0]), ('worker1', [8.0])] "
                                   "[('worker0', 2), ('worker1', 2)]")


def test_the_core_never_imports_mmengine() -> None:
    code = "import shmlog, sys; print(sorted(m for m in sys.modules if m.startswith('mmengine')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), timeout=TIMEOUT, check=True).stdout
    assert out.strip() == "[]"
    assert os.path.exists(RUN)

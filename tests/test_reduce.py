"""Job-wide statistics: a ``reduce`` entry of LogProcessor shows its statistic over every rank.

Unit tests of the shares and of LogProcessor with a given exchange; then real
jobs: 2 ranks on one node under torchrun (the node combines in shared
memory), and 2 simulated nodes of 2 ranks each, each node in a mount
namespace of its own with a private /dev/shm (no shared memory between
them), where only the nodes' local ranks 0 exchange over torch.distributed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
from _shared_workers import child_env

from shmlog import HistoryBuffer, LogProcessor
from shmlog.errors import InvalidValue
from shmlog.format import reduce

TESTS = Path(__file__).resolve().parent
TIMEOUT = 240


class _Hub:
    def __init__(self, scalars: dict[str, list[float]], info: dict | None = None) -> None:
        self.log_scalars = OrderedDict((k, HistoryBuffer(v, [1] * len(v))) for k, v in scalars.items())
        self.runtime_info = OrderedDict(info or {})

    def get_info(self, key: str, default=None):
        return self.runtime_info.get(key, default)


CFG = [{"data_src": "loss", "method_name": "mean", "window_size": 2, "reduce": "mean",
        "log_name": "loss_job"},
       {"data_src": "loss", "method_name": "max", "window_size": 2, "reduce": "max",
        "log_name": "loss_max"}]


def test_a_mean_over_ranks_is_the_mean_over_the_union_of_their_windows() -> None:
    ranks = [([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]), ([10.0, 20.0], [3.0, 1.0])]
    total = reduce.empty()
    union_values, union_counts = [], []
    for values, counts in ranks:
        buffer = HistoryBuffer(values, counts)
        window = 2
        total = reduce.add(total, reduce.share(buffer.mean(window),
                                               reduce.window_weight(buffer, window)))
        union_values += values[-window:]
        union_counts += counts[-window:]
    assert math.isclose(reduce.value("mean", total), sum(union_values) / sum(union_counts))
    assert reduce.value("max", total) == max(HistoryBuffer(v, c).mean(2) for v, c in ranks)
    assert reduce.value("sum", total) == pytest.approx(sum(HistoryBuffer(v, c).mean(2)
                                                           for v, c in ranks))


def test_reduce_must_name_a_known_combination() -> None:
    with pytest.raises(InvalidValue, match=r"custom_cfg\[0\]\['reduce'\]: expected one of "
                                           r"\['mean', 'sum', 'min', 'max'\].*got 'median'"):
        LogProcessor(custom_cfg=[{"data_src": "loss", "method_name": "mean", "reduce": "median"}])


def test_without_an_exchange_a_rank_is_the_whole_job() -> None:
    processor = LogProcessor(by_epoch=False, custom_cfg=CFG)
    tag, line = processor.format_iter(_Hub({"train/loss": [1.0, 2.0, 4.0]}), "train", 2,
                                      iter=2, max_iters=10)
    assert tag["loss_job"] == 3.0 and tag["loss_max"] == 4.0  # its own window of 2


def test_the_exchange_gives_the_job_s_statistic_and_is_asked_once_per_line() -> None:
    processor = LogProcessor(by_epoch=False, custom_cfg=CFG)
    calls = []

    def exchange(step, shares):  # another rank with loss 10 and 20 in its window
        calls.append((step, sorted(shares)))
        other = {"loss_job": reduce.share(15.0, 2.0), "loss_max": reduce.share(15.0, 2.0)}
        return {name: reduce.add(shares[name], other[name]) for name in shares}

    processor.exchange = exchange
    tag, line = processor.format_iter(_Hub({"train/loss": [1.0, 2.0, 4.0]}), "train", 2,
                                      iter=2, max_iters=10)
    assert tag["loss_job"] == pytest.approx((2.0 + 4.0 + 10.0 + 20.0) / 4)
    assert tag["loss_max"] == 15.0
    assert "loss_job: 9.0000" in line and "loss_max: 15.0000" in line
    assert calls == [(("train", "iter", 2, 2), ["loss_job", "loss_max"])]


def test_values_exchanged_for_the_step_are_used_as_they_are() -> None:
    processor = LogProcessor(by_epoch=False, custom_cfg=CFG)
    processor.exchange = lambda step, shares: pytest.fail("no exchange: the values are ready")
    ready = {"shmlog/reduced": {"step": ["train", "iter", 2, 2],
                                "values": {"loss_job": 7.0, "loss_max": 8.0}}}
    tag, _line = processor.format_iter(_Hub({"train/loss": [1.0, 2.0, 4.0]}, ready), "train", 2,
                                       iter=2, max_iters=10)
    assert (tag["loss_job"], tag["loss_max"]) == (7.0, 8.0)


def test_the_runner_path_takes_reduce_out_of_the_entry_before_the_statistic() -> None:
    """MMEngine's LoggerHook path: ``statistics(**entry)`` must never see ``reduce``."""

    class Runner:
        iter = 2
        epoch = 0
        max_iters = 10
        max_epochs = None
        train_loop = object()
        _train_loop = train_loop

        def __init__(self) -> None:
            self.message_hub = _Hub({"train/loss": [1.0, 2.0, 4.0]})

    processor = LogProcessor(by_epoch=False, custom_cfg=CFG)
    tag, line = processor.get_log_after_iter(Runner(), 2, "train")
    assert tag["loss_job"] == 3.0 and "loss_job: 3.0000" in line


# -- real jobs ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _master_lines(path: Path) -> dict[int, str]:
    lines = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.search(r"Iter\(train\) \[\s*(\d+)/\d+\]", line)
        if match:
            lines[int(match.group(1))] = line
    return lines


def _figure(line: str, name: str) -> float:
    return float(re.search(rf"\b{name}: ([-\d.]+)", line).group(1))


@pytest.mark.needs_torch
@pytest.mark.timeout(TIMEOUT)
def test_two_ranks_on_one_node_show_the_mean_over_both(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    port = _free_port()
    done = subprocess.run(
        _torchrun("--nnodes=1", "--nproc_per_node=2", f"--master_port={port}",
                  str(TESTS / "_reduce_rank.py"), str(tmp_path)),
        capture_output=True, text=True, timeout=TIMEOUT, env=child_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _master_lines(tmp_path / "run" / "run.log")
    assert sorted(lines) == [4, 8]  # rank 0's lines only
    for line in lines.values():
        assert _figure(line, "loss") == 0.05  # rank 0's own window
        assert _figure(line, "loss_job") == pytest.approx(0.55)  # (0.05 + 1.05) / 2
        assert _figure(line, "loss_max") == pytest.approx(1.1)
        assert _figure(line, "loss_sum") == pytest.approx(1.1)


def _namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.needs_torch
@pytest.mark.skipif(not _namespaces(), reason="needs root and unshare -m for private /dev/shm")
def test_two_simulated_nodes_keep_their_sessions_apart_and_reduce_over_all_four_ranks(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    port = _free_port()
    launches = []
    for node in (0, 1):
        run = " ".join(_torchrun(
            "--nnodes=2", "--nproc_per_node=2", f"--node_rank={node}",
            "--master_addr=127.0.0.1", f"--master_port={port}",
            str(TESTS / "_reduce_rank.py"), str(tmp_path)))
        launches.append(subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size=64m tmpfs /dev/shm && exec {run}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
        ))
    outputs = [p.communicate(timeout=TIMEOUT) for p in launches]
    assert [p.returncode for p in launches] == [0, 0], [err[-3000:] for _out, err in outputs]

    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    # Node-local sessions: the same name on both nodes, each with its own ranks only.
    assert len({s["session"] for s in seen}) == 1
    for node, ranks in ((0, (0, 1)), (1, (2, 3))):
        pids = sorted(seen[r]["pid"] for r in ranks)
        for r in ranks:
            assert seen[r]["node"] == str(node) and seen[r]["members"] == pids
    # Per-node folders: several nodes without shared storage write <stem>_logs/;
    # only rank 0's node has the master log, and no file name is written twice.
    folder = tmp_path / "run_logs"
    assert folder.is_dir() and not (tmp_path / "run").exists()
    lines = _master_lines(folder / "run.log")
    assert sorted(lines) == [4, 8]
    for line in lines.values():
        assert _figure(line, "loss") == 0.05  # global rank 0's own
        assert _figure(line, "loss_job") == pytest.approx(1.55)  # mean over all 4 ranks
        assert _figure(line, "loss_max") == pytest.approx(3.1)
        assert _figure(line, "loss_sum") == pytest.approx(6.2)


@pytest.mark.needs_torch
@pytest.mark.timeout(TIMEOUT)
def test_a_rank_that_skips_the_first_logging_step_costs_a_bounded_wait_and_a_warning(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    port = _free_port()
    job = subprocess.Popen(
        _torchrun("--nnodes=1", "--nproc_per_node=2", f"--master_port={port}",
                  str(TESTS / "_reduce_skip_rank.py"), str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    try:
        _out, err = job.communicate(timeout=TIMEOUT // 2)
    except subprocess.TimeoutExpired:
        job.terminate()  # torchrun stops its ranks (each in its own process session)
        job.communicate(timeout=60)
        pytest.fail("a rank that skipped the first logging step hung the job")
    assert job.returncode == 0, err[-3000:]
    seen = json.loads((tmp_path / "rank0.json").read_text())
    assert any("miss the shares of local rank(s) [1]" in w for w in seen["warnings"]), seen
    lines = _master_lines(tmp_path / "run" / "run.log")
    assert sorted(lines) == [4]
    assert _figure(lines[4], "loss_job") == pytest.approx(0.05)  # rank 0's share alone

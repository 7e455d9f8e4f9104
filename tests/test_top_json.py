"""``shmlog top --json``: one sample of a session as JSON, for scripts."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest
from _shared_workers import child_env

import shmlog
from shmlog import MessageHub
from shmlog.tools import sample_json

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30.0
HUB = "task"
STATISTICS = ["updates", "current", "mean", "rate", "age", "value_sum", "count_sum", "min", "max"]


def shmlog_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shmlog", *args], capture_output=True,
                          text=True, env=child_env(), timeout=TIMEOUT, check=False)


def strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_top_json_prints_one_sample_in_the_documented_shape(name: str) -> None:
    with shmlog.init(name, log_writer="none"):
        hub = MessageHub.get_instance(HUB)
        for i in range(1, 21):
            hub.update_scalar("train/loss", 1.0 / i)
        hub.update_scalar("train/grad_norm", float("nan"))
        hub.update_scalar("train/grad_norm", float("inf"))
        hub.update_info("iter", 19)
        hub.update_info("max_iters", 100)
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.environ["SHMLOG_WORKER_ID"] = "3"
                for value in (4.0, 6.0):
                    hub.update_scalar("train/loss", value, count=2)
                os.write(ready_w, b"r")
                select.select([stop_r], [], [])
            finally:
                os._exit(0)
        try:
            assert select.select([ready_r], [], [], TIMEOUT)[0]
            loss = hub.get_scalar("train/loss")
            expected = {
                "totals": loss.totals(), "mean": float(loss.mean(5)),
                "worker3 mean": float(loss.per_writer()["worker3"].mean(5)),
                "main sum": loss.per_writer()["main"].totals().value_sum,
            }
            done = shmlog_cli("top", name, "--json", "--window", "5")
        finally:
            os.write(stop_w, b"x")
            os.waitpid(child, 0)
    assert done.returncode == 0, done.stderr
    data = strict_json(done.stdout)
    assert list(data) == ["version", "session", "time", "window", "members", "writers_alive",
                          "writers_total", "writers", "dropped_log_records", "log_rings",
                          "progress", "scalars"]
    assert (data["version"], data["session"], data["window"]) == (1, name, 5)
    assert (data["members"], data["writers_alive"], data["writers_total"]) == (1, 2, 2)
    assert data["writers"] == {"main": True, "worker3": True}
    assert (data["dropped_log_records"], data["log_rings"]) == (0, [])
    assert data["progress"] == {HUB: {"iter": 19, "max_iters": 100}}
    assert [(s["hub"], s["key"]) for s in data["scalars"]] == [
        (HUB, "train/grad_norm"), (HUB, "train/loss")]
    grad, merged = data["scalars"]
    assert list(merged) == ["hub", "key", *STATISTICS, "writers"]
    assert merged["updates"] == expected["totals"].updates == 22
    assert merged["current"] == 6.0
    assert merged["mean"] == pytest.approx(expected["mean"])
    assert merged["value_sum"] == expected["totals"].value_sum
    assert (merged["count_sum"], merged["min"], merged["max"]) == (24.0, 0.05, 6.0)
    assert merged["age"] >= 0
    assert merged["rate"] > 0  # estimated from the newest records' times
    writers = {w["writer"]: w for w in merged["writers"]}
    assert list(writers) == ["main", "worker3"]
    assert list(writers["worker3"]) == ["writer", "alive", *STATISTICS]
    assert writers["worker3"]["alive"] is True
    assert writers["worker3"]["updates"] == 2
    assert writers["worker3"]["mean"] == pytest.approx(expected["worker3 mean"])
    assert (writers["worker3"]["min"], writers["worker3"]["max"]) == (4.0, 6.0)
    assert writers["main"]["value_sum"] == expected["main sum"]
    assert grad["current"] == "+Inf"
    assert grad["value_sum"] == "NaN"


def test_json_of_a_statistic_without_a_value_is_null() -> None:
    assert sample_json._number(None) is None
    assert [sample_json._number(v) for v in (float("-inf"), 2)] == ["-Inf", 2.0]
    assert sample_json._plain({"a": (1, 2.5)}) == {"a": [1, 2.5]}


def test_top_json_refuses_what_it_cannot_show(name: str) -> None:
    done = shmlog_cli("top", name, "--json")
    assert done.returncode == 1
    assert f"shmlog top: no shmlog session named {name!r}" in done.stderr
    done = shmlog_cli("top", name, "--json", "--frames", "2")
    assert done.returncode == 2
    assert "argument --frames: not allowed with argument --json" in done.stderr

"""What a logging step costs with job-wide statistics (``reduce``) and without.

Every rank of a torchrun job (gloo, CPU) logs a few scalars and calls
``shmlog.report_progress`` at every step, each step a logging step; the
median time of that call is measured on every rank, with a LogProcessor
config whose entries have ``reduce`` (the ranks exchange their shares: the
node's ranks through shared memory, one rank per node over the job's
process group) and with the same config without it, the two alternating in
rounds.  Two layouts: 2 ranks on one node, and, where ``unshare -m`` is
available (root), 2 simulated nodes of 2 ranks each with private /dev/shm.

    python scripts/bench_reduce.py            # 3 rounds of 200 steps per variant and layout
    python scripts/bench_reduce.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchkit import load_average

KEYS = ("loss", "loss_cls", "acc")


def _cfg(reduce: bool) -> dict:
    entries = []
    for key in KEYS:
        entry = {"data_src": key, "method_name": "mean", "window_size": 10,
                 "log_name": f"{key}_job"}
        if reduce:
            entry["reduce"] = "mean"
        entries.append(entry)
    return {"window_size": 10, "by_epoch": False, "custom_cfg": entries}


def rank_main(out: str, reduce: bool, steps: int) -> None:
    import torch.distributed as dist

    import shmlog
    from shmlog import MessageHub

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    times = []
    with shmlog.init(log_file=os.path.join(out, "run.log"), log_processor=_cfg(reduce),
                     log_interval=1, tensorboard=False):
        hub = MessageHub.get_instance("mmengine")
        for i in range(steps + 10):
            for key in KEYS:
                hub.update_scalar(f"train/{key}", rank + i * 0.001)
            dist.barrier()  # as a training step's gradient exchange would align them
            t0 = time.perf_counter_ns()
            shmlog.report_progress("train", i, iter=i, max_iters=steps + 10)
            if i >= 10:
                times.append(time.perf_counter_ns() - t0)
        dist.barrier()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(statistics.median(times), f)
    dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(nodes: int, reduce: bool, steps: int) -> list[float]:
    out = tempfile.mkdtemp(prefix="bench-reduce-")
    port = _port()
    inner = [__file__, "--rank", out, "--steps", str(steps)] + (
        ["--reduce"] if reduce else [])
    launches = []
    for node in range(nodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
               "--nproc_per_node=2", f"--node_rank={node}", "--master_addr=127.0.0.1",
               f"--master_port={port}", *inner]
        if nodes > 1:
            cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   "mount -t tmpfs -o size=64m tmpfs /dev/shm && exec \"$0\" \"$@\"", *cmd]
        launches.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True))
    for p in launches:
        _, err = p.communicate(timeout=600)
        if p.returncode:
            raise RuntimeError(f"a launch failed:\n{err[-3000:]}")
    try:
        return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2 * nodes)]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rank", help=argparse.SUPPRESS)
    parser.add_argument("--reduce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        rank_main(args.rank, args.reduce, args.steps)
        return 0
    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench_reduce.py needs PyTorch (pip install torch); nothing was measured")
        return 0
    rounds, steps = (1, 20) if args.quick else (3, 200)
    layouts = [1]
    if os.geteuid() == 0 and shutil.which("unshare"):
        layouts.append(2)
    else:
        print("2 simulated nodes need root and unshare -m: only 1 node measured")
    print(f"report_progress at a logging step, {len(KEYS)} entries; median over {steps} steps "
          f"per rank, median over ranks and {rounds} round(s); load {load_average()}")
    for nodes in layouts:
        runs: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(rounds):
            for reduce in (False, True) if round_ % 2 == 0 else (True, False):
                runs[reduce].append(statistics.median(_job(nodes, reduce, steps)))
        without, with_ = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"  {nodes} node(s) x 2 ranks: without reduce {without / 1e3:8.1f} us, with reduce "
              f"{with_ / 1e3:8.1f} us -> +{(with_ - without) / 1e3:.1f} us per logging step  "
              f"(rounds: {[round(x / 1e3) for x in runs[False]]} / "
              f"{[round(x / 1e3) for x in runs[True]]} us)")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A rank of a torchrun job that logs a scalar whose job-wide statistics its master line shows.

Run by ``torchrun ... _reduce_rank.py OUT``: rank r logs ``train/loss`` =
r + 0.1 * (i % 2) at every iteration and calls ``report_progress`` every
iteration; the session's LogProcessor shows ``loss_job`` (reduce='mean'),
``loss_max`` (reduce='max') and ``loss_sum`` (reduce='sum') over a window
of 4.  Each rank then writes what it saw of its node (its session, the
session's members) to ``OUT/rank<r>.json``.
"""

import json
import os
import sys

import torch.distributed as dist

import shmlog
from shmlog import MessageHub

WINDOW = 4
CFG = {
    "window_size": WINDOW,
    "by_epoch": False,
    "custom_cfg": [
        {"data_src": "loss", "method_name": "mean", "window_size": WINDOW, "reduce": "mean",
         "log_name": "loss_job"},
        {"data_src": "loss", "method_name": "max", "window_size": WINDOW, "reduce": "max",
         "log_name": "loss_max"},
        {"data_src": "loss", "method_name": "mean", "window_size": WINDOW, "reduce": "sum",
         "log_name": "loss_sum"},
    ],
}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    log_file = os.path.join(out, "run.log")
    with shmlog.init(log_file=log_file, log_processor=CFG, log_interval=WINDOW,
                     tensorboard=False) as session:
        hub = MessageHub.get_instance("mmengine")
        for i in range(2 * WINDOW):
            hub.update_scalar("train/loss", rank + 0.1 * (i % 2))
            shmlog.report_progress("train", i, iter=i, max_iters=2 * WINDOW)
        members = sorted(pid for _slot, pid, _start in session.shared.control.live_members())
        seen = {"rank": rank, "pid": os.getpid(), "session": session.name,
                "members": members, "node": os.environ.get("GROUP_RANK")}
        assert session.flush(timeout=60)
        dist.barrier()  # every node's lines are written before any session closes
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

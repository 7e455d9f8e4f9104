"""A rank of a torchrun job in which rank 1 skips ``report_progress`` at the first logging step.

Run by ``torchrun ... _reduce_skip_rank.py OUT``: like ``_reduce_rank.py``
(``loss_job`` is ``reduce='mean'``), but with one logging step, which rank 1
skips; every rank then meets at ``dist.barrier()``.  The node's exchange
waits ``WAIT_SECONDS`` (2 here) for rank 1's share, warns, and logs the line
without it.  Each rank writes ``OUT/rank<r>.json`` when done.
"""

import json
import os
import sys
import warnings

import torch.distributed as dist
from _reduce_rank import CFG, WINDOW

import shmlog
import shmlog.api.reduce
from shmlog import MessageHub

shmlog.api.reduce.WAIT_SECONDS = 2.0


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    log_file = os.path.join(out, "run.log")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with shmlog.init(log_file=log_file, log_processor=CFG, log_interval=WINDOW,
                         tensorboard=False) as session:
            hub = MessageHub.get_instance("mmengine")
            for i in range(WINDOW):
                hub.update_scalar("train/loss", rank + 0.1 * (i % 2))
                if rank == 1 and i == WINDOW - 1:
                    continue  # the first (and only) logging step
                shmlog.report_progress("train", i, iter=i, max_iters=WINDOW)
            assert session.flush(timeout=60)
            dist.barrier()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"warnings": [str(w.message) for w in caught]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

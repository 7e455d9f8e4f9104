#!/usr/bin/env python3
"""A simulated training run whose every process logs through one shmlog session.

The main process trains a small numpy model (a two-layer perceptron) on
batches produced by data-loading worker processes.  Each worker times its own
batch preparation and reports it with ``MessageHub.update_scalar`` — the
MessageHub of the main process sees those values directly, with no queue
and no code in the workers beyond the update.  The main process logs loss,
learning rate and iteration time the same way, and every few iterations
LogProcessor formats MMEngine's iteration line, which MMLogger prints and
writes to ``<work-dir>/demo/demo.log``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

import shmlog
from shmlog import LogProcessor, MessageHub, MMLogger

HUB = "demo"
FEATURES = 16
HIDDEN = 128
_MIX = np.linalg.qr(np.random.default_rng(0).normal(size=(256, 256)))[0]


def worker(worker_id: int, batches: mp.Queue, count: int, batch_size: int, seed: int) -> None:
    """Produce ``count`` batches, reporting each one's preparation time."""
    os.environ["SHMLOG_WORKER_ID"] = str(worker_id)  # labels this process "worker<id>"
    hub = MessageHub.get_instance(HUB)
    rng = np.random.default_rng(seed + worker_id)
    truth = np.linspace(-1.0, 1.0, FEATURES)
    for _ in range(count):
        start = time.perf_counter()
        raw = rng.normal(size=(batch_size, 256))
        # CPU work standing in for decoding and augmentation; worker 1 is
        # slower on purpose, which the per-worker breakdown shows.
        for _ in range(40 + 40 * worker_id):
            raw = np.tanh(raw @ _MIX)
        x = raw[:, :FEATURES]
        y = np.sin(x @ truth) + rng.normal(scale=0.05, size=batch_size)
        hub.update_scalar("train/data_time", time.perf_counter() - start)
        batches.put((x, y))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="work_dirs", help="where the log folder goes")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iters-per-epoch", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--interval", type=int, default=10, help="log every N iterations")
    args = parser.parse_args()

    log_file = Path(args.work_dir) / "demo.log"
    with shmlog.init(f"demo-{os.getpid()}") as session:
        logger = MMLogger.get_instance("demo", log_file=str(log_file))
        logger.info(f"shmlog session {session.name!r}: {args.workers} data workers, "
                    f"{args.epochs} epochs x {args.iters_per_epoch} iterations")
        hub = MessageHub.get_instance(HUB)
        processor = LogProcessor(
            window_size=args.interval,
            by_epoch=True,
            custom_cfg=[{"data_src": "loss", "method_name": "min", "log_name": "loss_min",
                         "window_size": "global"}],
        )
        rng = np.random.default_rng(1)
        w1 = rng.normal(scale=FEATURES**-0.5, size=(FEATURES, HIDDEN))
        w2 = rng.normal(scale=HIDDEN**-0.5, size=HIDDEN)
        base_lr = 0.2
        max_iters = args.epochs * args.iters_per_epoch
        context = mp.get_context("fork")
        iteration = 0
        for epoch in range(args.epochs):
            batches = context.Queue(maxsize=4)
            share, extra = divmod(args.iters_per_epoch, args.workers)
            workers = [
                context.Process(
                    target=worker,
                    args=(w, batches, share + (w < extra), args.batch_size, epoch * 100),
                )
                for w in range(args.workers)
            ]
            for p in workers:
                p.start()
            start = time.perf_counter()
            for batch_idx in range(args.iters_per_epoch):
                x, y = batches.get(timeout=60)
                lr = base_lr * 0.5 * (1 + np.cos(np.pi * iteration / max_iters))
                hidden = np.tanh(x @ w1)
                error = hidden @ w2 - y
                loss = float(np.mean(error**2))
                grad_out = 2 * error / len(y)
                grad_hidden = np.outer(grad_out, w2) * (1 - hidden**2)
                w2 -= lr * hidden.T @ grad_out
                w1 -= lr * x.T @ grad_hidden
                iteration += 1
                hub.update_scalar("train/lr", lr)
                hub.update_scalar("train/loss", loss)
                now = time.perf_counter()
                hub.update_scalar("train/time", now - start)  # data wait included
                start = now
                hub.update_info("iter", iteration)
                hub.update_info("epoch", epoch)
                mean_time = hub.get_scalar("train/time").mean(args.interval)
                hub.update_info("eta", float(mean_time * (max_iters - iteration)))
                if (batch_idx + 1) % args.interval == 0:
                    _, line = processor.format_iter(
                        hub, "train", batch_idx, iter=iteration - 1, epoch=epoch,
                        dataloader_len=args.iters_per_epoch, max_epochs=args.epochs,
                        max_iters=max_iters,
                    )
                    logger.info(line)
            for p in workers:
                p.join(timeout=60)
                if p.exitcode != 0:
                    raise RuntimeError(f"data worker {p.name} exited with {p.exitcode}")

        data_time = hub.get_scalar("train/data_time")
        logger.info(f"data_time over the whole run: mean {data_time.mean():.6f} s over "
                    f"{data_time.totals().updates} batches")
        for label, buffer in sorted(data_time.per_writer().items()):
            totals = buffer.totals()
            logger.info(f"  {label:10s} {totals.updates:4d} batches, mean "
                        f"{totals.value_sum / totals.count_sum:.6f} s")
        print(f"\nlog file: {logger.log_file}")
        print(f"shared memory used by the session: {session.shared.total_bytes()} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

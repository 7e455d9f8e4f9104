#!/usr/bin/env python3
"""A small training run on 2 ranks whose every process logs through one shmlog session.

The launcher plays torchrun: it creates the session (which starts the log
writer), then starts the ranks with RANK / WORLD_SIZE / MASTER_PORT set.  Each
rank joins the session by name and trains a small model on CPU: with PyTorch
installed, an MLP fed by a DataLoader with 4 workers whose batch preparation
time is recorded per worker (``shmlog.track_data_time``, as
``train/worker_data_time``; ``train/data_time`` is the time the training loop
waited for each batch, as MMEngine's IterTimerHook measures it), gradients averaged
across ranks with gloo; without PyTorch, a numpy model fed by worker processes
of the same shape.  Training processes only update scalars and report
progress; the log writer formats MMEngine's lines (LogProcessor configured
from a config dict), writes the master and per-rank log files in the seed's
layout and exports the scalars.  At the end the launcher renders the curves to
PNG and prints where everything is.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import shmlog
from shmlog import MessageHub, MMLogger

LOG_PROCESSOR = {
    "window_size": 10,
    "by_epoch": True,
    "custom_cfg": [
        {"data_src": "loss", "method_name": "min", "log_name": "loss_min", "window_size": "global"},
    ],
}
FEATURES, HIDDEN = 32, 64
ITEMS_PER_RANK = 1280
BATCH = 32


def make_data(rank: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + rank)
    x = rng.normal(size=(count, FEATURES)).astype(np.float32)
    w = np.linspace(-1, 1, FEATURES, dtype=np.float32)
    y = (np.tanh(0.3 * (x @ w)) + 0.05 * rng.normal(size=count)).astype(np.float32)
    return x, y


def augment(row: np.ndarray, rounds: int) -> np.ndarray:
    """CPU work standing in for decoding and augmenting one sample."""
    out = row
    for _ in range(rounds):
        out = np.tanh(out * 1.01) * 0.99 + row * 0.01
    return out


# -- the PyTorch rank --------------------------------------------------------------


def train_torch(args: argparse.Namespace, rank: int, world: int) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.set_num_threads(1)
    # Four workers per rank on a small machine is the point of the demo.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    dist.init_process_group("gloo", rank=rank, world_size=world)

    class Samples(Dataset):
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.x, self.y = x, y

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int):
            # Worker w of every rank is a little slower than worker w - 1, which
            # the per-worker data time shows.
            info = torch.utils.data.get_worker_info()
            rounds = 20 + 15 * (info.id if info is not None else 0)
            return torch.from_numpy(augment(self.x[i], rounds)), torch.tensor(self.y[i])

    x, y = make_data(rank, ITEMS_PER_RANK)
    train = shmlog.track_data_time(DataLoader(
        Samples(x, y), batch_size=BATCH, shuffle=True, num_workers=args.workers,
        persistent_workers=args.workers > 0,
    ))
    vx, vy = make_data(100 + rank, ITEMS_PER_RANK // 4)
    val = shmlog.track_data_time(DataLoader(Samples(vx, vy), batch_size=BATCH), mode="val")
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    max_iters = args.epochs * len(train)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_iters)
    hub = MessageHub.get_instance("mmengine")
    logger = MMLogger.get_instance("demo", log_file=args.log_file, distributed=True)
    logger.info(f"rank {rank}/{world}: {len(train)} iterations per epoch, "
                f"{args.workers} DataLoader workers")
    iteration = 0
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for batch_idx, (inputs, target) in enumerate(train):
            fetched = time.perf_counter()
            loss = nn.functional.mse_loss(model(inputs).squeeze(1), target)
            optimizer.zero_grad()
            loss.backward()
            for p in model.parameters():  # data parallel: average the gradients
                dist.all_reduce(p.grad)
                p.grad /= world
            optimizer.step()
            lr = schedule.get_last_lr()[0]
            schedule.step()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)  # the loss of the whole global batch
            now = time.perf_counter()
            if rank == 0:
                # As in MMEngine, rank 0 logs the training scalars; the
                # workers' data time comes from every worker of every rank.
                hub.update_scalar("train/lr", lr)
                hub.update_scalar("train/loss", mean_loss.item() / world)
                hub.update_scalar("train/data_time", fetched - start)
                hub.update_scalar("train/time", now - start)
                shmlog.report_progress("train", batch_idx, iter=iteration, epoch=epoch,
                                       dataloader_len=len(train), max_iters=max_iters,
                                       max_epochs=args.epochs)
            start = now
            iteration += 1
        model.eval()
        with torch.no_grad():
            start = time.perf_counter()
            for inputs, target in val:
                val_loss = nn.functional.mse_loss(model(inputs).squeeze(1), target)
                now = time.perf_counter()
                if rank == 0:
                    hub.update_scalar("val/loss", val_loss.item())
                    hub.update_scalar("val/time", now - start)
                start = now
        dist.barrier()
        if rank == 0:
            shmlog.report_progress("val", len(val) - 1, iter=iteration, epoch=epoch + 1,
                                   dataloader_len=len(val), max_iters=max_iters,
                                   max_epochs=args.epochs, event="epoch_end")
        logger.info(f"rank {rank} finished epoch {epoch + 1}")
    dist.destroy_process_group()


# -- the numpy rank (no PyTorch) --------------------------------------------------------


def numpy_worker(worker_id: int, rank: int, indices: list, out: mp.Queue) -> None:
    os.environ["SHMLOG_WORKER_ID"] = str(worker_id)
    hub = MessageHub.get_instance("mmengine")
    x, y = make_data(rank, ITEMS_PER_RANK)
    for chunk in indices:
        start = time.perf_counter()
        rows = np.stack([augment(x[i], 20 + 15 * worker_id) for i in chunk])
        hub.update_scalar("train/worker_data_time", time.perf_counter() - start)
        out.put((rows, y[chunk]))


def train_numpy(args: argparse.Namespace, rank: int, world: int) -> None:
    hub = MessageHub.get_instance("mmengine")
    logger = MMLogger.get_instance("demo", log_file=args.log_file, distributed=True)
    rng = np.random.default_rng(rank)
    w1 = rng.normal(scale=FEATURES ** -0.5, size=(FEATURES, HIDDEN))
    w2 = rng.normal(scale=HIDDEN ** -0.5, size=HIDDEN)
    per_epoch = ITEMS_PER_RANK // BATCH
    max_iters = args.epochs * per_epoch
    logger.info(f"rank {rank}/{world}: {per_epoch} iterations per epoch, {args.workers} "
                f"worker processes (numpy model: PyTorch is not installed)")
    ctx = mp.get_context("fork")
    iteration = 0
    for epoch in range(args.epochs):
        order = rng.permutation(ITEMS_PER_RANK)[: per_epoch * BATCH].reshape(per_epoch, BATCH)
        queue = ctx.Queue(maxsize=8)
        workers = [ctx.Process(target=numpy_worker,
                               args=(w, rank, [list(c) for c in order[w::args.workers]], queue))
                   for w in range(args.workers)]
        for p in workers:
            p.start()
        start = time.perf_counter()
        for batch_idx in range(per_epoch):
            xb, yb = queue.get(timeout=60)
            fetched = time.perf_counter()
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * iteration / max_iters))
            hidden = np.tanh(xb @ w1)
            error = hidden @ w2 - yb
            grad_out = 2 * error / len(yb)
            w1 -= lr * xb.T @ (np.outer(grad_out, w2) * (1 - hidden ** 2))
            w2 -= lr * hidden.T @ grad_out
            now = time.perf_counter()
            if rank == 0:  # each rank trains its own shard; rank 0 logs, as in MMEngine
                hub.update_scalar("train/lr", lr)
                hub.update_scalar("train/loss", float(np.mean(error ** 2)))
                hub.update_scalar("train/data_time", fetched - start)
                hub.update_scalar("train/time", now - start)
                shmlog.report_progress("train", batch_idx, iter=iteration, epoch=epoch,
                                       dataloader_len=per_epoch, max_iters=max_iters,
                                       max_epochs=args.epochs)
            start = now
            iteration += 1
        for p in workers:
            p.join(timeout=60)
        logger.info(f"rank {rank} finished epoch {epoch + 1}")


# -- launcher -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _use_torch(args: argparse.Namespace) -> bool:
    if args.no_torch:
        return False
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def launch(args: argparse.Namespace) -> int:
    work = Path(args.work_dir).resolve()
    log_file = work / "demo.log"
    name = f"demo-{os.getpid()}"
    torch_mode = _use_torch(args)
    started = time.monotonic()
    with shmlog.init(name, log_file=str(log_file), log_processor=LOG_PROCESSOR,
                     log_interval=args.interval) as session:
        print(f"session {name!r}: log writer pid {session.writer_pid or '(starting)'}, "
              f"{args.ranks} ranks x {args.workers} data workers, "
              f"{'PyTorch' if torch_mode else 'numpy'} model", flush=True)
        port = _free_port()
        ranks = []
        for rank in range(args.ranks):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank),
                       WORLD_SIZE=str(args.ranks), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), SHMLOG_DEMO_SESSION=name)
            cmd = [sys.executable, __file__, *sys.argv[1:]]
            if not torch_mode and "--no-torch" not in cmd:
                cmd.append("--no-torch")
            ranks.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in ranks]
        session.flush()
        hub = MessageHub.get_instance("mmengine")
        data_time = hub.get_scalar("train/worker_data_time")
        print(f"\ntrain/worker_data_time per writer ({data_time.totals().updates} batches):")
        for label, buffer in sorted(data_time.per_writer().items()):
            totals = buffer.totals()
            print(f"  {label:16s} {totals.updates:4d} batches  mean "
                  f"{totals.value_sum / totals.count_sum * 1000:7.2f} ms")
        writer_pid = session.writer_pid
    if any(codes):
        print(f"a rank failed: exit codes {codes}", file=sys.stderr)
        return 1
    run_dir = log_file.with_suffix("")
    print(f"\nfinished in {time.monotonic() - started:.1f} s (log writer was pid {writer_pid})")
    print(f"log folder:   {run_dir}")
    for path in sorted(run_dir.glob("*.log")):
        print(f"  {path.name}: {len(path.read_text().splitlines())} lines")
    print(f"scalars file: {run_dir / 'scalars.jsonl'}")
    try:
        from shmlog.errors import PlotError
        from shmlog.tools.plot import plot

        png = plot(run_dir, run_dir / "curves.png", title="shmlog demo")
        print(f"curves:       {png}")
    except (ImportError, PlotError) as exc:
        print(f"curves:       not drawn ({exc})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="work_dirs", help="where the log folder goes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers per rank")
    parser.add_argument("--interval", type=int, default=10, help="log every N iterations")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--no-torch", action="store_true", help="use the numpy model")
    args = parser.parse_args()
    args.log_file = str(Path(args.work_dir).resolve() / "demo.log")
    session_name = os.environ.get("SHMLOG_DEMO_SESSION")
    if session_name is None:
        return launch(args)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    with shmlog.init(session_name):
        if args.no_torch:
            train_numpy(args, rank, world)
        else:
            train_torch(args, rank, world)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

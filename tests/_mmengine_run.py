"""A small MMEngine training run, for the tests of shmlog.mmengine (run as a program).

    python tests/_mmengine_run.py WORK_DIR [--shmlog] [--dict] [--shmlog-processor]
        [--resume CKPT] [--pause-at N] [--epochs N] [--launcher pytorch]

A toy BaseModel learns y = 2x on 20 items; its dataset's ``__getitem__``
updates ``train/item_loss`` (rank + 1) through MMEngine's current
MessageHub, in DataLoader workers (2 of them).  LoggerHook logs every 5
iterations.  With ``--shmlog`` the config enables shmlog by its two lines and
nothing else, and is read with ``Config.fromfile`` from the file it is
written to (MMEngine imports ``custom_imports`` there); with ``--dict`` the
Runner is built from ``Config(dict)``, which does not import them, and the
hook is named by its import path.  ``--shmlog-processor`` makes the
Runner's LogProcessor shmlog's (``type='shmlog.LogProcessor'``).  With
``--launcher pytorch`` (under torchrun) the gloo group is
initialised before the Runner is built, and DDP gets ``device_ids=None``: CPU
only.  ``--pause-at N`` prints ``paused <session>`` before training
iteration N and waits for a line on stdin.  At the end each rank prints
``scalars <rank> <updates of train/loss> <updates of train/item_loss> <its
mean>`` from the Runner's hub (``0 none`` when it has no ``train/item_loss``),
then ``done``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS
from mmengine.runner import Runner


@MODELS.register_module()
class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, labels=None, mode="tensor"):
        predictions = inputs * self.weight
        if mode == "loss":
            return {"loss": ((predictions - labels) ** 2).mean()}
        return [predictions]


@DATASETS.register_module()
class ToyDataset(BaseDataset):
    def __init__(self, **kwargs) -> None:
        super().__init__(serialize_data=False, lazy_init=True, **kwargs)

    def full_init(self) -> None:
        self._fully_initialized = True

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> dict:
        rank = int(os.environ.get("RANK", "0"))
        MessageHub.get_current_instance().update_scalar("train/item_loss", rank + 1.0)
        x = torch.tensor([index / 20.0])
        return {"inputs": x, "labels": 2 * x}


@HOOKS.register_module()
class PauseHook(Hook):
    """Stops before one training iteration until the test says go (a line on stdin)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.at:
            import shmlog

            print("paused", shmlog.current_session().name, flush=True)
            sys.stdin.readline()


def config(args: argparse.Namespace) -> dict:
    loader = dict(dataset=dict(type="ToyDataset"), sampler=dict(type="DefaultSampler", shuffle=False),
                  batch_size=2, num_workers=2, persistent_workers=False,
                  collate_fn=dict(type="default_collate"))
    cfg = dict(
        model=dict(type="ToyModel"),
        work_dir=args.work_dir,
        experiment_name="toy",
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=args.epochs),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=5),
                           checkpoint=dict(type="CheckpointHook", interval=1)),
        launcher=args.launcher,
        env_cfg=dict(dist_cfg=dict(backend="gloo")),
        randomness=dict(seed=7),
        custom_hooks=[],
    )
    if args.launcher != "none":
        cfg["model_wrapper_cfg"] = dict(type="MMDistributedDataParallel", device_ids=None)
    if args.shmlog:
        cfg["custom_imports"] = dict(imports=["shmlog.mmengine"], allow_failed_imports=False)
        hook = "shmlog.mmengine.ShmlogHook" if args.dict else "ShmlogHook"
        cfg["custom_hooks"].append(dict(type=hook))
    if args.shmlog_processor:
        # item_loss_job: the workers' item_loss over every rank (rank r logs r + 1).
        cfg["log_processor"] = dict(type="shmlog.LogProcessor", window_size=10, custom_cfg=[
            dict(data_src="item_loss", method_name="mean", window_size=5, reduce="mean",
                 log_name="item_loss_job")])
    if args.pause_at is not None:
        cfg["custom_hooks"].append(dict(type="PauseHook", at=args.pause_at))
    if args.resume is not None:
        cfg.update(resume=True, load_from=args.resume)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir")
    parser.add_argument("--shmlog", action="store_true")
    parser.add_argument("--dict", action="store_true")
    parser.add_argument("--shmlog-processor", action="store_true")
    parser.add_argument("--resume")
    parser.add_argument("--pause-at", type=int)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--launcher", default="none")
    args = parser.parse_args()
    if args.launcher == "pytorch":
        torch.distributed.init_process_group("gloo")  # before the Runner: no init_dist
    cfg = Config(config(args))
    if not args.dict:
        os.makedirs(args.work_dir, exist_ok=True)
        path = os.path.join(args.work_dir, f"toy_rank{os.environ.get('RANK', '0')}.py")
        cfg.dump(path)
        cfg = Config.fromfile(path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    # Without shmlog the workers' updates never reach the Runner's hub.
    items = hub.log_scalars.get("train/item_loss")
    count, mean = (0, "none") if items is None else (len(items.data[0]), float(items.mean()))
    # One write per report: both ranks print into one pipe, and print() writes each
    # argument on its own when the stream is unbuffered.
    sys.stdout.write(f"scalars {runner.rank} {len(hub.get_scalar('train/loss').data[0])} "
                     f"{count} {mean}\ndone\n")
    sys.stdout.flush()
    if args.launcher == "pytorch":
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

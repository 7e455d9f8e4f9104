"""An MMEngine Runner whose model returns its losses as fake device tensors (run as a program).

    python tests/_device_runner.py WORK_DIR [--shmlog]

The model's ``train_step`` returns ``{'loss': t, 'aux': t / 2}`` with FakeTensors
(``shmlog.stats.device_fake``) whose blocking read raises; LoggerHook logs every
5 of 10 iterations.  With ``--shmlog`` the config adds ``ShmlogHook``.  Prints
``loss <history>``, ``waits <n>``, ``staged <n>`` and ``done``, or ``error ...``
when something read a device value (MMEngine's own ``update_scalar`` does).
"""

from __future__ import annotations

import sys

import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

import shmlog.mmengine  # noqa: F401 (registers ShmlogHook)
from shmlog.stats import device_fake as fake

DEVICE = fake.install()
STREAM = fake.FakeStream()


class FakeDeviceModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.steps = 0

    def forward(self, inputs, labels=None, mode="tensor"):
        return [inputs]

    def train_step(self, data, optim_wrapper):
        # The device runs two iterations behind the host.
        STREAM.complete(max(0, len(STREAM.queued) - 4))
        self.steps += 1
        loss = fake.FakeTensor(float(self.steps), STREAM)
        aux = fake.FakeTensor(self.steps / 2, STREAM)
        loss.forbid_sync = aux.forbid_sync = True
        return {"loss": loss, "aux": aux}


def main() -> None:
    work_dir = sys.argv[1]
    hooks = [dict(type="ShmlogHook", log_writer="none", worker_data_time=False)]
    runner = Runner(
        model=FakeDeviceModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=[{"inputs": torch.tensor([float(i)])} for i in range(10)],
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
            batch_size=1, num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=10),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=5),
                           checkpoint=dict(type="CheckpointHook", interval=100)),
        custom_hooks=hooks if "--shmlog" in sys.argv else [],
        default_scope="mmengine",
    )
    try:
        runner.train()
    except RuntimeError as exc:  # MMEngine's own update_scalar read a device value
        print("error", exc)
        return
    history = runner.message_hub.get_scalar("train/loss").data[0]
    print("loss", [float(v) for v in history])
    print("waits", len(DEVICE.waits))
    print("staged", DEVICE.staged)
    print("done")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""shmlog on a real GPU: no device sync for logging, what that is worth, and NCCL.

One run, under 5 minutes on one GPU, printing every figure with the GPU's name:

1. 1,000 ``update_scalar`` calls of CUDA tensors (float32, bfloat16, float16,
   int64, in turn) inside ``torch.cuda.set_sync_debug_mode('error')``, outside
   and inside a session: no error (no sync), and each history equals the
   ``.item()`` values afterwards.
2. A launch-bound training loop (50 linear layers of 64, batch 64, SGD), 300
   iterations, logging 4 loss tensors per iteration and reading them back at
   a logging step every 50: iterations/s and host syncs per iteration for
   ``.item()`` logging, shmlog's deferred logging and no logging at all,
   alternated, 3 rounds (medians and per-round figures).
3. The same model in MMEngine's Runner, with and without ``ShmlogHook``
   (MMEngine's own MessageHub calls ``.item()`` on every ``log_vars`` value).
4. The job-wide ``reduce`` exchange on an NCCL process group of world size 1,
   inside sync debug mode 'error' (the exchange runs over gloo).

Host syncs are counted with ``torch.cuda.set_sync_debug_mode('warn')`` over
a window of iterations outside the timed ones; shmlog's own waits at logging
steps (``cudaEventSynchronize``, which that counter does not see) are
reported beside them (``reader waits``).

Preparing the wheels (here, on a machine with pip and a package index, in
the repository's root; the GPU machine has Python 3.12 and PyTorch but no
index, no posix-ipc and no MMEngine)::

    python3 -m pip wheel --no-deps -w .whl .      # shmlog itself (builds with setuptools)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        --platform manylinux1_x86_64 -d .whl \\
        posix-ipc==1.3.2 mmengine==0.10.7 addict==2.4.0 termcolor==3.3.0 \\
        yapf==0.43.0 platformdirs==4.14.9 'setuptools<81'

That is 8 wheels, 2.1 MB in all (shmlog 210 KB, posix-ipc 52 KB, mmengine
450 KB, setuptools 1.1 MB, yapf 256 KB, platformdirs 94 KB, termcolor 8 KB,
addict 4 KB).  MMEngine's other needs (numpy, matplotlib, pyyaml, rich,
opencv-python-headless) are on the GPU machine already; setuptools < 81
still has the ``pkg_resources`` MMEngine 0.10.7 imports.

``.whl`` is ignored by git (``.gitignore``): copy it to the GPU machine with
the checkout explicitly.  Running it there, from the repository's root (meant
to end within 5 minutes; give it a limit of 6)::

    PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py

The script installs every ``.whl/*.whl`` with ``pip install --no-index
--no-deps --target`` into a new private folder of the temporary directory and
runs itself again with that folder on ``PYTHONPATH`` (without a shmlog wheel
it uses this checkout's ``shmlog``).  ``--wheels DIR`` names another folder.
It exits 0 when every check passed, 1 when one failed (or the wheels could not
be installed), 2 when no CUDA GPU is there (nothing is checked then).

Without a GPU, ``--cpu-dry-run`` runs the same flow on the CPU with the fake
device of ``shmlog.stats.device_fake`` (check 1), CPU tensors (checks 2, 3;
no sync figures) and gloo (check 4), short, so that a test can run it;
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REEXEC = "SHMLOG_GPU_CHECK_SITE"
LOSSES = ("loss_mse", "loss_l1", "loss_mean", "loss_max")
FAILED: list[str] = []


def set_up(wheels: Path) -> None:
    """Install the carried wheels into a private folder and run again with it on the path."""
    if os.environ.get(_REEXEC) is None:
        found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
        if found:
            site = Path(tempfile.mkdtemp(prefix="shmlog-gpu-check-"))  # private (0700)
            print(f"set-up: installing {len(found)} wheels from {wheels} into {site}", flush=True)
            done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                   "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                                   "--target", str(site), *map(str, found)], check=False)
            if done.returncode != 0:
                sys.exit(f"set-up: pip could not install the wheels of {wheels} (above); they "
                         f"must suit this Python ({sys.version.split()[0]}) and platform")
            path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
            env = dict(os.environ, PYTHONPATH=path, **{_REEXEC: str(site)})
            os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    sys.path.append(str(ROOT))  # shmlog from this checkout when no wheel installed it


def check(ok: bool, what: str) -> None:
    print(f"   {'ok' if ok else 'FAILED'}: {what}", flush=True)
    if not ok:
        FAILED.append(what)


class Device:
    """The real GPU, or (dry run) the CPU with shmlog's fake device for device values."""

    def __init__(self, dry: bool) -> None:
        import torch

        self.torch, self.dry = torch, dry
        if dry:
            from shmlog.stats import device_fake

            self.fake = device_fake
            self.backend = device_fake.install()
            self.stream = device_fake.FakeStream()
            self.device = torch.device("cpu")
            self.name = "CPU dry run (fake device)"
        else:
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.name = torch.cuda.get_device_name(self.device)

    def logged(self, tensor):
        """What the training loop hands to update_scalar: the tensor itself on a GPU."""
        if not self.dry:
            return tensor
        self.stream.complete(max(0, len(self.stream.queued) - 8))  # the device runs behind
        value = self.fake.FakeTensor(tensor.item(), self.stream)
        value.forbid_sync = True
        return value

    def synchronize(self) -> None:
        if not self.dry:
            self.torch.cuda.synchronize()

    def sync_mode(self, mode: str) -> None:
        if not self.dry:
            self.torch.cuda.set_sync_debug_mode(mode)


class SyncCounter:
    """Host syncs seen by torch's sync debug mode 'warn' while it is active."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.count = 0
        self._catcher = None

    def start(self) -> None:
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        self.device.sync_mode("warn")

    def stop(self) -> None:
        self.device.sync_mode("default")
        self._catcher.__exit__(None, None, None)
        self.count = sum("synchroniz" in str(w.message) for w in self._caught)


# -- 1 ------------------------------------------------------------------------------------------


def check_no_sync(dev: Device, n: int) -> None:
    import shmlog
    from shmlog.api.device import settle

    torch = dev.torch
    print(f"1. {n} update_scalar of device tensors in sync debug mode 'error' [{dev.name}]")
    kinds = (torch.float32, torch.bfloat16, torch.float16, torch.int64)
    tensors = []
    for i in range(n):
        dtype = kinds[i % len(kinds)]
        if dtype.is_floating_point:
            t = torch.randn((), device=dev.device).to(dtype) * 100
        else:
            t = torch.randint(-2**62, 2**62, (), device=dev.device)  # rounds to float64
        tensors.append(t)
    expected = [float(t.item()) for t in tensors]
    logged = [dev.logged(t) for t in tensors]
    if not dev.dry:
        dev.sync_mode("error")
        try:
            tensors[0].item()
            check(False, "sync debug mode 'error' refuses .item() (else this check proves nothing)")
        except RuntimeError:
            check(True, "sync debug mode 'error' refuses .item()")
        dev.sync_mode("default")
    for where in ("outside a session", "inside a session"):
        hub = shmlog.MessageHub.get_instance(f"gpu-check-1-{where.split()[0]}")
        session = shmlog.init(f"gpu-check-{os.getpid()}", log_writer="none") \
            if where == "inside a session" else None
        try:
            dev.sync_mode("error")
            error = None
            start = time.perf_counter()
            try:
                for t in logged:
                    hub.update_scalar("x", t)
            except RuntimeError as exc:
                error = exc
            spent = time.perf_counter() - start
            dev.sync_mode("default")
            check(error is None, f"{where}: no sync in {n} calls ({spent / n * 1e6:.1f} us "
                                 f"per call){'' if error is None else ': ' + str(error)[:200]}")
            if dev.dry:
                dev.stream.complete()
            settle()
            got = hub.get_scalar("x").data[0].tolist()[-n:]
            check(got == expected, f"{where}: history equals the .item() values "
                                   f"({sum(a == b for a, b in zip(got, expected))}/{n} equal)")
        finally:
            dev.sync_mode("default")
            if session is not None:
                session.close()


# -- 2 ------------------------------------------------------------------------------------------


def make_net(torch, device):
    layers = []
    for _ in range(50):
        layers += [torch.nn.Linear(64, 64), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).to(device)


def losses_of(out) -> dict:
    return {"loss_mse": out.pow(2).mean(), "loss_l1": out.abs().mean(),
            "loss_mean": out.mean(), "loss_max": out.amax()}


def check_loop(dev: Device, iters: int, rounds: int, warm: int = 20, counted: int = 100) -> None:
    import shmlog
    from shmlog.api.device import device_values_stats

    torch = dev.torch
    print(f"2. launch-bound loop: 50 x Linear(64, 64), batch 64, {iters} iterations, "
          f"4 losses logged per iteration, {rounds} rounds [{dev.name}]")
    net = make_net(torch, dev.device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = torch.randn(64, 64, device=dev.device)
    hub = shmlog.MessageHub.get_instance("gpu-check-2")
    every = min(50, max(2, iters // 2))

    def step(i: int, mode: str) -> None:
        losses = losses_of(net(x))
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if mode == "item":
            for k, v in losses.items():
                hub.update_scalar(k, v.item())
        elif mode == "shmlog":
            for k, v in losses.items():
                hub.update_scalar(k, dev.logged(v))
        if mode != "none" and (i + 1) % every == 0:  # a logging step reads them back
            shmlog.report_progress("train", i, iter=i, max_iters=iters)
            for k in LOSSES:
                hub.get_scalar(k).mean(10)

    results: dict[str, list[float]] = {"item": [], "shmlog": [], "none": []}
    syncs: dict[str, float] = {}
    with shmlog.init(f"gpu-check-loop-{os.getpid()}", log_writer="none", log_interval=every):
        for mode in results:  # warm-up, and the sync count over ``counted`` iterations
            for i in range(warm):
                step(i, mode)
            dev.synchronize()
            counter, waits = SyncCounter(dev), device_values_stats()["reader_waits"]
            counter.start()
            for i in range(counted):
                step(i, mode)
            counter.stop()
            syncs[mode] = counter.count / counted
            waits = device_values_stats()["reader_waits"] - waits
            print(f"   {mode:>6}: {syncs[mode]:.2f} host syncs per iteration "
                  f"(reader waits in {counted} iterations: {waits})", flush=True)
        for r in range(rounds):
            line = []
            for mode in results:
                dev.synchronize()
                start = time.perf_counter()
                for i in range(iters):
                    step(i, mode)
                dev.synchronize()
                results[mode].append(iters / (time.perf_counter() - start))
                line.append(f"{mode} {results[mode][-1]:.0f}")
            print(f"   round {r + 1}: it/s " + ", ".join(line), flush=True)
    med = {m: statistics.median(v) for m, v in results.items()}
    print(f"   median it/s: .item() {med['item']:.0f}, shmlog {med['shmlog']:.0f}, "
          f"no logging {med['none']:.0f}; shmlog/.item() {med['shmlog'] / med['item']:.2f}x, "
          f"shmlog/no logging {med['shmlog'] / med['none']:.2f}x")
    print(f"   shmlog's staging in this process: {device_values_stats()}")
    check(syncs["shmlog"] <= syncs["none"], "shmlog logging adds no host sync per iteration")
    if not dev.dry:
        check(syncs["item"] >= 4, ".item() logging syncs at least 4 times per iteration")


# -- 3 ------------------------------------------------------------------------------------------


def check_runner(dev: Device, iters: int, rounds: int, start_at: int = 20) -> None:
    try:
        import mmengine  # noqa: F401
    except ImportError:
        if dev.dry:
            print("3. skipped: MMEngine is not importable")
        else:
            check(False, "3. MMEngine is not importable: carry its wheels (see the docstring)")
        return
    torch = dev.torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    import shmlog.mmengine  # noqa: F401 (registers ShmlogHook)

    print(f"3. MMEngine Runner, the same model, {iters} iterations, with and without "
          f"ShmlogHook, {rounds} rounds [{dev.name}]")
    count_from, count_n = start_at + iters // 3, min(50, iters // 3)

    class LaunchBound(BaseModel):
        def __init__(self, fake_values: bool) -> None:
            super().__init__()
            self.net = make_net(torch, "cpu")
            self.register_buffer("x", torch.randn(64, 64))
            self.fake_values = fake_values  # dry run: log_vars as fake device values

        def forward(self, mode="tensor", **kwargs):
            out = self.net(self.x)
            return losses_of(out) if mode == "loss" else [out]

        def train_step(self, data, optim_wrapper):
            log_vars = super().train_step(data, optim_wrapper)
            if self.fake_values:
                return {k: dev.logged(v) for k, v in log_vars.items()}
            return log_vars

    class Clock(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.counter = SyncCounter(dev)
            self.t0 = self.t1 = 0.0

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            if runner.iter == start_at:
                dev.synchronize()
                self.t0 = time.perf_counter()
            if runner.iter == count_from:
                self.counter.start()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if runner.iter + 1 == count_from + count_n:
                self.counter.stop()
            if runner.iter + 1 == iters + start_at:
                dev.synchronize()
                self.t1 = time.perf_counter()

    results: dict[str, list[float]] = {"without": [], "with": []}
    syncs: dict[str, list[float]] = {"without": [], "with": []}
    for r in range(rounds):
        for variant in results:
            clock = Clock()
            hooks = [clock]
            if variant == "with":
                hooks.append(dict(type="ShmlogHook", log_writer="none", worker_data_time=False))
            with tempfile.TemporaryDirectory() as work_dir:
                runner = Runner(
                    model=LaunchBound(dev.dry and variant == "with").to(dev.device),
                    work_dir=work_dir,
                    experiment_name=f"gpu-check-{variant}-{r}-{os.getpid()}",
                    train_dataloader=dict(dataset=[{}] * (iters + start_at),
                                          sampler=dict(type="DefaultSampler", shuffle=False),
                                          collate_fn=dict(type="default_collate"),
                                          batch_size=1, num_workers=0),
                    train_cfg=dict(by_epoch=False, max_iters=iters + start_at),
                    optim_wrapper=dict(optimizer=dict(type="SGD", lr=1e-4)),
                    default_hooks=dict(logger=dict(type="LoggerHook", interval=50),
                                       checkpoint=dict(type="CheckpointHook", interval=10**6,
                                                       save_last=False)),
                    custom_hooks=hooks, default_scope="mmengine",
                    log_level="WARNING",
                )
                runner.train()
            results[variant].append(iters / (clock.t1 - clock.t0))
            syncs[variant].append(clock.counter.count / count_n)
        print(f"   round {r + 1}: it/s without {results['without'][-1]:.0f}, with "
              f"{results['with'][-1]:.0f}; host syncs per iteration without "
              f"{syncs['without'][-1]:.2f}, with {syncs['with'][-1]:.2f}", flush=True)
    med = {v: statistics.median(results[v]) for v in results}
    print(f"   median it/s: without ShmlogHook {med['without']:.0f}, with {med['with']:.0f} "
          f"({med['with'] / med['without']:.2f}x)")
    if not dev.dry:
        check(max(syncs["with"]) < min(syncs["without"]),
              "with ShmlogHook the Runner syncs less per iteration than without")


# -- 4 ------------------------------------------------------------------------------------------


def check_nccl(dev: Device) -> None:
    import torch.distributed as dist

    from shmlog.api.reduce import JobReducer
    from shmlog.format.reduce import share

    backend = "gloo" if dev.dry else "nccl"
    print(f"4. the reduce exchange on a {backend} process group of world size 1 [{dev.name}]")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        reducer = JobReducer(None)
        shares = {"loss_job": share(2.5, 4.0), "loss_max": share(7.0, 1.0)}
        dev.sync_mode("error")
        try:
            # The exchange itself (a job of one rank skips it when logging).
            total = reducer._exchange(dist, (("train", "iter", 9, 9), tuple(shares)), shares, {})
            error = None
        except RuntimeError as exc:
            total, error = None, exc
        finally:
            dev.sync_mode("default")
        check(error is None, f"the exchange made no device sync"
                             f"{'' if error is None else ': ' + str(error)[:200]}")
        check(total == shares, f"the job's totals are the one rank's shares ({total})")
        group = getattr(reducer, "_group", None)
        print(f"   default group: {dist.get_backend()}, exchange group: "
              f"{dist.get_backend(group) if group is not None else 'none'}")
    finally:
        dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run the flow on the CPU with a fake device (no figures)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="folder of wheels to install first (default: .whl)")
    args = parser.parse_args()
    set_up(args.wheels)
    if os.environ.get(_REEXEC):  # the folder the set-up made goes at exit
        atexit.register(shutil.rmtree, os.environ[_REEXEC], True)
    started = time.perf_counter()
    try:
        import torch
    except ImportError:
        print("gpu_check: PyTorch is not importable; nothing checked", file=sys.stderr)
        return 2
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing "
              "checked; run it on a GPU machine, or with --cpu-dry-run to try its flow",
              file=sys.stderr)
        return 2
    dev = Device(args.cpu_dry_run)
    import shmlog

    print(f"gpu_check on {dev.name}: torch {torch.__version__}, shmlog {shmlog.__version__} "
          f"from {Path(shmlog.__file__).parent}, Python {sys.version.split()[0]}", flush=True)
    dry = args.cpu_dry_run
    if dry:  # the flow, briefly
        check_no_sync(dev, 40)
        check_loop(dev, 4, 1, warm=2, counted=4)
        check_runner(dev, 6, 1, start_at=2)
    else:
        check_no_sync(dev, 1000)
        check_loop(dev, 300, 3)
        check_runner(dev, 300, 3)
    check_nccl(dev)
    print(f"done in {time.perf_counter() - started:.0f} s on {dev.name}: "
          f"{'all checks passed' if not FAILED else f'{len(FAILED)} FAILED'}", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

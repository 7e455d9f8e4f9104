"""The job-wide exchange on an NCCL job runs over gloo groups that shmlog makes once.

Objects gathered over NCCL go through the rank's CUDA device and make the host
wait for it; shmlog's exchange must not.  A stand-in for torch.distributed
records which groups each collective used.
"""

from __future__ import annotations

from typing import Any

import pytest

from shmlog.api.reduce import JobReducer, cpu_group
from shmlog.format.reduce import share


class StubDist:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.made: list[tuple[Any, Any]] = []  # (ranks, backend) of each new group
        self.gathered_on: list[Any] = []

    def get_backend(self, group: Any = None) -> str:
        return self.backend if group is None else group[1] or self.backend

    def get_world_size(self) -> int:
        return 1

    def new_group(self, ranks: Any = None, backend: Any = None) -> tuple:
        self.made.append((ranks, backend))
        return ("group", backend, len(self.made))

    def all_gather_object(self, out: list, obj: Any, group: Any = None) -> None:
        self.gathered_on.append(group)
        out[0] = obj


STEP = (("train", "iter", 9, 9), ("loss_job",))
SHARES = {"loss_job": share(2.0, 3.0)}


def test_on_nccl_every_collective_of_the_exchange_runs_on_gloo() -> None:
    dist = StubDist("nccl")
    reducer = JobReducer(None)
    for _ in range(3):
        assert reducer._exchange(dist, STEP, SHARES, {}) == SHARES
    # Made once: a gloo group of every rank, then the gloo group of one rank per node.
    assert dist.made == [(None, "gloo"), ([0], "gloo")]
    assert all(group is not None and group[1] == "gloo" for group in dist.gathered_on)
    assert len(dist.gathered_on) == 4  # the one-time gather, then one per exchange


@pytest.mark.parametrize("backend", ["gloo", "cpu:gloo,cuda:nccl"])
def test_with_gloo_in_the_default_group_it_is_used_as_before(backend: str) -> None:
    dist = StubDist(backend)
    assert cpu_group(dist) is None
    reducer = JobReducer(None)
    assert reducer._exchange(dist, STEP, SHARES, {}) == SHARES
    assert dist.made == [([0], None)]
    assert dist.gathered_on[0] is None  # the default group

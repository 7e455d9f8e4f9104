"""The job-wide exchange on an NCCL job runs over gloo groups that shmlog makes once.

Objects gathered over NCCL go through the rank's CUDA device and make the host
wait for it; shmlog's exchange must not.  A stand-in for torch.distributed
(two ranks, this one rank 0, each its own node) records which groups each
collective used.
"""

from __future__ import annotations

from typing import Any

import pytest

from shmlog.api.reduce import JobReducer, bounded_group, object_backend
from shmlog.format.reduce import add, share


class StubDist:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.made: list[tuple[Any, Any]] = []  # (ranks, backend) of each new group
        self.gathered_on: list[Any] = []

    def get_backend(self, group: Any = None) -> str:
        return self.backend if group is None else group[1] or self.backend

    def get_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 2

    def new_group(self, ranks: Any = None, timeout: Any = None, backend: Any = None,
                  use_local_synchronization: bool = False) -> tuple:
        assert timeout is not None, "every group shmlog makes has a timeout"
        self.made.append((ranks, backend))
        return ("group", backend, len(self.made))

    def all_gather_object(self, out: list, obj: Any, group: Any = None) -> None:
        self.gathered_on.append(group)
        out[:] = [obj] * len(out)  # the other rank sent the same shares


STEP = (("train", "iter", 9, 9), ("loss_job",))
SHARES = {"loss_job": share(2.0, 3.0)}
BOTH = {"loss_job": add(share(2.0, 3.0), share(2.0, 3.0))}


@pytest.fixture(autouse=True)
def _one_rank_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


def test_on_nccl_every_collective_of_the_exchange_runs_on_gloo() -> None:
    dist = StubDist("nccl")
    reducer = JobReducer(None)
    for _ in range(3):
        assert reducer._exchange(dist, STEP, SHARES, {}) == BOTH
    # Made once: the gloo group of the two leaders.
    assert dist.made == [([0, 1], "gloo")]
    assert len(dist.gathered_on) == 3  # one per exchange
    assert all(group is not None and group[1] == "gloo" for group in dist.gathered_on)
    # The one-time group of every rank (when ranks must say who leads) is gloo too.
    assert bounded_group(dist, None)[1] == "gloo"


@pytest.mark.parametrize("backend", ["gloo", "cpu:gloo,cuda:nccl"])
def test_with_gloo_in_the_default_group_it_is_used_as_before(backend: str) -> None:
    dist = StubDist(backend)
    assert object_backend(dist) is None
    reducer = JobReducer(None)
    assert reducer._exchange(dist, STEP, SHARES, {}) == BOTH
    assert dist.made == [([0, 1], None)]  # the job's own backend
    assert dist.gathered_on[0][1] is None

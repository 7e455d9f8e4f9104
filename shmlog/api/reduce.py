"""The exchange behind job-wide statistics, once per logging step, over the job's own group.

``reduce`` entries of a LogProcessor config (``shmlog.format.reduce``) need
every rank's share of the step.  The exchange uses what the job already has,
and never a transport of its own:

1. every rank puts its shares into its node's session (runtime info under
   ``wire.REDUCE_PART_PREFIX`` + its local rank), and the node's local rank
   0 adds them up as they arrive: one process per node goes on;
2. those processes exchange the nodes' totals over torch.distributed, on a
   subgroup of the job's process group that holds one rank per node, made
   once, by those ranks only, at the first exchange (under torchrun the
   leaders follow from the launch layout; otherwise the ranks tell each other
   once who leads); every group shmlog makes times out after
   ``WAIT_SECONDS``, so a rank that skips a logging step costs a bounded wait
   and a warning, never a hang;
   when the job's default group has no gloo backend (an NCCL job), shmlog's
   groups are gloo groups: exchanging Python objects over NCCL would copy
   them through the rank's current CUDA device and wait for it (a device sync
   at every logging step), and needs that device set right; over gloo they
   stay on the CPU, at the price of TCP between the leaders;
3. every node's local rank 0 then holds the job's totals, global rank 0
   (whose line the master log shows) among them; the other ranks go on with
   their own statistics.

Without torch.distributed (or with one process) a rank is the whole job;
without a session on the node, every rank takes part in step 2 itself.
The exchange happens in calls every rank makes at every logging step anyway:
``shmlog.report_progress``, and MMEngine's LoggerHook through LogProcessor.
Every rank must make the same calls, with the same config.

Per-worker values (each rank's DataLoader workers' ``worker_data_time``) can
go along, for rank 0 to export them job-wide.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
import zlib
from datetime import timedelta
from typing import Any

from ..format.reduce import Share, add, empty
from ..shm import codec
from ..wire import REDUCE_PART_PREFIX
from .config import Config
from .process import get_local_rank

# How long a node's local rank 0 waits for the node's other ranks' shares.
WAIT_SECONDS = 60.0
# Each rank's shares of the last few steps are kept apart, so that a rank
# already at a later step does not replace the share a slower leader reads.
_SLOTS = 8


def _part_key(local_rank: int, step: tuple) -> str:
    return f"{REDUCE_PART_PREFIX}{local_rank}:{zlib.crc32(repr(step).encode()) % _SLOTS}"


def _dist() -> Any | None:
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist
    except (AttributeError, RuntimeError):
        return None
    return None


def object_backend(dist: Any) -> str | None:
    """The backend of the groups shmlog makes: None (the job's own) when its default
    group has gloo, else ``"gloo"``, so that objects never travel through a GPU
    (see the module docstring)."""
    return None if "gloo" in str(dist.get_backend()).lower() else "gloo"


class JobReducer:
    """One process's part in the job-wide exchange (callable as a LogProcessor's ``exchange``)."""

    def __init__(self, session: Any = None, config: Config | None = None) -> None:
        self._session = session  # shmlog.api.session.Session, or None: no node combine
        # The node's settings; None: read from the environment at each exchange.
        self.config = config
        self._group: Any = None
        self._leaders: list[int] | None = None
        self._broken = False  # an exchange between nodes failed: nodes go on alone
        self._last: tuple[Any, dict[str, Share] | None] = (None, None)
        self.workers: dict[str, float] = {}  # the job's per-worker values, on leaders

    # -- the exchange -----------------------------------------------------------------

    def __call__(self, step: tuple, shares: dict[str, Share],
                 workers: dict[str, float] | None = None) -> dict[str, Share] | None:
        key = (tuple(step), tuple(sorted(shares)))
        if self._last[0] == key:  # asked again for the same step: no second exchange
            return self._last[1]
        dist = _dist()
        if dist is None or dist.get_world_size() == 1:
            result: dict[str, Share] | None = dict(shares)
            self.workers = dict(workers or {})
        else:
            result = self._exchange(dist, key, shares, dict(workers or {}))
        self._last = (key, result)
        return result

    def _exchange(self, dist: Any, key: tuple, shares: dict[str, Share],
                  workers: dict[str, float]) -> dict[str, Share] | None:
        local_rank = get_local_rank()
        local_size = (self.config or Config.from_env()).local_world_size
        session = self._session if self._session is not None and not self._session.closed else None
        if session is None:  # no shared memory to combine in: every rank takes part
            local_rank, local_size = 0, 1
        group = self._leader_group(dist, local_rank, local_size)
        if session is not None and local_size > 1:
            node = self._combine_node(session, key, shares, workers, local_rank, local_size)
            if node is None:
                return None  # not this node's local rank 0: it only contributed
            shares, workers = node
        gathered = self._gather(dist, group, key, (shares, workers))
        total: dict[str, Share] = {}
        self.workers = {}
        for node_shares, node_workers in gathered:
            for name, part in node_shares.items():
                total[name] = add(total.get(name, empty()), part)
            self.workers.update(node_workers)
        return total

    def _leader_group(self, dist: Any, local_rank: int, local_size: int) -> Any:
        """The subgroup of one rank per node, made once (None: this rank alone, or broken).

        Under torchrun the leaders follow from the layout (each node's ranks are
        consecutive), so no rank waits for another here: a rank that skips a
        logging step cannot stall the others at the first one.  Otherwise the
        ranks tell each other who leads, on a group with its own timeout.
        Either way the leaders' group has ``WAIT_SECONDS`` as its timeout.
        """
        if self._leaders is None:
            self._leaders = leader_ranks(dist.get_rank(), dist.get_world_size(), local_rank,
                                         local_size)
            if self._leaders is None:
                self._leaders, self._group = self._ask_leaders(dist, local_rank)
            elif len(self._leaders) > 1 and local_rank == 0:
                self._group = self._bounded(lambda: bounded_group(dist, self._leaders), None)
        return self._group

    def _ask_leaders(self, dist: Any, local_rank: int) -> tuple[list[int], Any]:
        everyone = self._bounded(lambda: bounded_group(dist, None), None)
        if everyone is None:
            return [dist.get_rank()], None
        flags: list[Any] = [None] * dist.get_world_size()
        if not self._bounded(lambda: dist.all_gather_object(flags, local_rank == 0,
                                                            group=everyone) or True, False):
            return [dist.get_rank()], None
        leaders = [rank for rank, leads in enumerate(flags) if leads]
        if local_rank != 0 or len(leaders) == 1:
            return leaders, None
        return leaders, self._bounded(lambda: bounded_group(dist, leaders), None)

    def _gather(self, dist: Any, group: Any, key: tuple, mine: Any) -> list[Any]:
        """Every leader's (shares, workers) of step ``key``; this node's alone when the
        leaders' exchange is off (one leader, or it failed: see :meth:`_bounded`)."""
        if group is None:
            return [mine]
        gathered: list[Any] = [None] * len(self._leaders or [])
        if not self._bounded(lambda: dist.all_gather_object(gathered, mine, group=group)
                             or True, False, key[0]):
            return [mine]
        return gathered

    def _bounded(self, call: Any, failed: Any, step: Any = None) -> Any:
        """``call()``, or ``failed`` once a collective of the exchange did not complete.

        The exchange's groups time out after ``WAIT_SECONDS``: a node whose
        leader skipped a logging step (or is gone) costs the others that wait
        once, then a warning, and the job goes on with each node's own figures.
        """
        if self._broken:
            return failed
        try:
            return call()
        except RuntimeError as exc:  # a timeout, or a peer that left
            self._broken = True
            self._group = None
            at = "" if step is None else f" at step {step}"
            warnings.warn(
                f"shmlog: the job-wide statistics exchange between nodes failed{at} (pid "
                f"{os.getpid()}): {exc}. Every rank must call report_progress (or log "
                f"through LogProcessor) at the same steps; from now on each node logs its "
                f"own statistics",
                stacklevel=4,
            )
            return failed

    def _combine_node(self, session: Any, key: tuple, shares: dict[str, Share],
                      workers: dict[str, float], local_rank: int,
                      local_size: int) -> tuple[dict[str, Share], dict[str, float]] | None:
        """Add the node's ranks' shares up in shared memory; None on every rank but local 0."""
        shared = session.shared
        part = codec.encode("job statistics", {"step": list(key[0]), "names": list(key[1]),
                                               "shares": shares, "workers": workers})
        if local_rank != 0:
            shared.info_set(_part_key(local_rank, key[0]), part)
            return None
        total = {name: list(s) for name, s in shares.items()}
        workers = dict(workers)
        missing = set(range(1, local_size))
        deadline = time.monotonic() + WAIT_SECONDS
        while missing and time.monotonic() < deadline:
            for rank in sorted(missing):
                raw = shared.info_get(_part_key(rank, key[0]))
                data = None if raw is None else codec.decode(raw)
                if data is None or tuple(data["step"]) != key[0]:
                    continue
                for name, s in data["shares"].items():
                    total[name] = add(total.get(name, empty()), s)
                workers.update(data["workers"])
                missing.discard(rank)
            if missing:
                time.sleep(0.0005)
        if missing:
            warnings.warn(
                f"shmlog: job-wide statistics of step {key[0]} miss the shares of local "
                f"rank(s) {sorted(missing)} of this node (pid {os.getpid()}), which did not "
                f"reach this step within {WAIT_SECONDS:.0f} s",
                stacklevel=3,
            )
        return total, workers


def leader_ranks(rank: int, world: int, local_rank: int, local_size: int) -> list[int] | None:
    """The global ranks of each node's local rank 0, from the launch layout alone.

    torchrun gives each node ``local_size`` consecutive ranks; None when this
    is not such a launch (the ranks must then say who leads).
    """
    if local_size == 1:
        return list(range(world))  # every rank leads (no node to share)
    if not os.environ.get("TORCHELASTIC_RUN_ID") or world % local_size \
            or not 0 <= local_rank < local_size or (rank - local_rank) % local_size:
        return None
    return list(range(0, world, local_size))


def bounded_group(dist: Any, ranks: list[int] | None) -> Any:
    """A group of ``ranks`` (None: all) whose collectives time out after ``WAIT_SECONDS``;
    made by its members only, on gloo when the job's default group lacks it."""
    return dist.new_group(ranks=ranks, timeout=timedelta(seconds=WAIT_SECONDS),
                          use_local_synchronization=ranks is not None,
                          backend=object_backend(dist))

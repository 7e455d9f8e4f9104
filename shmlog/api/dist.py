"""Rank and world size without importing torch.

Logging starts before anything else, often before (or without) PyTorch, so
importing torch here would slow every start-up and fail where it is absent.
The launcher's environment variables (torchrun, ``mmengine`` launchers and
SLURM wrappers all export RANK/WORLD_SIZE/LOCAL_RANK) are read first-hand;
torch.distributed is asked only when the program has already imported torch
and initialised a process group, in which case it is the authority.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["get_local_rank", "get_rank", "get_world_size"]


def _initialised_torch_dist() -> Any | None:
    if "torch" not in sys.modules:
        return None
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if dist.is_available() and dist.is_initialized():
            return dist
    except (AttributeError, RuntimeError):  # a partial or stub torch: use env
        return None
    return None


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected an integer >= {minimum}"
        ) from None
    if value < minimum:
        raise ValueError(
            f"environment variable {name}={raw!r}: expected an integer >= {minimum}"
        )
    return value


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    dist = _initialised_torch_dist()
    if dist is not None:
        return int(dist.get_rank())
    return _env_int("RANK", 0, 0)


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    dist = _initialised_torch_dist()
    if dist is not None:
        return int(dist.get_world_size())
    return _env_int("WORLD_SIZE", 1, 1)


def get_local_rank() -> int:
    """Rank of this process on its node, from LOCAL_RANK (0 when unset)."""
    return _env_int("LOCAL_RANK", 0, 0)

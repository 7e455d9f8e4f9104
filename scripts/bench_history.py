"""Per-update cost of HistoryBuffer.update and MessageHub.update_scalar vs history length.

MMEngine appends with ``np.append``, so each update copies the whole history
and a long run pays milliseconds per scalar per iteration.  shmlog stores a
ring with running totals, so an update should cost the same at any length.
This script measures both at histories of 0, 10k, 100k and 1M entries (with
max_length 1M) and prints one table:

    python scripts/bench_history.py --mmengine-python /work/.venv-mm/bin/python

MMEngine is measured in this interpreter when it can be imported here, or in
a subprocess of ``--mmengine-python`` (which needs only MMEngine, not shmlog).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchkit import format_ns

MAX_LENGTH = 1_000_000
LENGTHS = (0, 10_000, 100_000, 1_000_000)
OPERATIONS = ("HistoryBuffer.update", "MessageHub.update_scalar")
KEY = "train/loss"
FLATNESS_LIMIT = 1.3
SPEEDUP_TARGET = 3.0

Plan = dict[int, tuple[int, int]]  # history length -> (updates per batch, repeats)
Results = dict[str, dict[int, float]]  # operation -> history length -> median ns/update

# shmlog's cost does not depend on the length, so every length gets the same plan.
SHMLOG_PLAN: Plan = dict.fromkeys(LENGTHS, (5_000, 9))
# MMEngine copies the history on every update (~ms at 1M): fewer, smaller batches.
MMENGINE_PLAN: Plan = {0: (1_000, 7), 10_000: (500, 7), 100_000: (100, 5), 1_000_000: (20, 5)}


def _time_batches(
    make_update: Callable[[], Callable[[float], Any]], batch: int, repeats: int
) -> float:
    """Median ns per call over ``repeats`` batches, each on a fresh prefilled target."""
    samples = []
    values = [0.5 + (i % 7) * 0.125 for i in range(batch)]
    for _ in range(repeats):
        update = make_update()
        update(0.25)  # first call outside the clock: creates lazily made state
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for value in values:
                update(value)
            elapsed = time.perf_counter_ns() - start
        finally:
            gc.enable()
        samples.append(elapsed / batch)
    return statistics.median(samples)


def _prefilled(buffer_class: Any, length: int) -> Any:
    """A buffer holding ``length`` float entries, with max_length 1M."""
    import numpy as np

    buffer = buffer_class(
        np.linspace(0.0, 1.0, length), np.ones(length, dtype=np.int64), MAX_LENGTH
    )
    for value in (0.5, 0.25):  # MMEngine keeps the dtype it was built with
        buffer.update(value, 1)
    return buffer


def _buffer_updates(prefilled: Any) -> Callable[[], Callable[[float], Any]]:
    """Each call: ``update`` of a fresh copy, so every batch starts at the same length."""

    def make() -> Callable[[float], Any]:
        return copy.deepcopy(prefilled).update

    return make


def _hub_updates(hub_class: Any, prefilled: Any) -> Callable[[], Callable[[float], Any]]:
    """Each call: ``update_scalar`` of a fresh hub whose KEY holds a copy of ``prefilled``."""
    names = iter(range(1 << 62))

    def make() -> Callable[[float], Any]:
        hub = hub_class(f"bench-{next(names)}", log_scalars={KEY: copy.deepcopy(prefilled)})
        update_scalar = hub.update_scalar

        def update(value: float) -> None:
            update_scalar(KEY, value)

        return update

    return make


def _measure(
    buffer_class: Any, hub_class: Any, lengths: list[int], plan: Plan, quick: bool
) -> Results:
    """Time both operations of one implementation at every history length."""
    results: Results = {operation: {} for operation in OPERATIONS}
    for length in lengths:
        batch, repeats = plan[length]
        if quick:
            batch, repeats = max(1, batch // 10), min(repeats, 3)
        prefilled = _prefilled(buffer_class, length)
        results[OPERATIONS[0]][length] = _time_batches(_buffer_updates(prefilled), batch, repeats)
        results[OPERATIONS[1]][length] = _time_batches(
            _hub_updates(hub_class, prefilled), batch, repeats
        )
    return results


def measure_shmlog(lengths: list[int], quick: bool) -> Results:
    from shmlog import HistoryBuffer, MessageHub

    return _measure(HistoryBuffer, MessageHub, lengths, SHMLOG_PLAN, quick)


def measure_mmengine(lengths: list[int], quick: bool) -> Results:
    from mmengine.logging import HistoryBuffer, MessageHub

    return _measure(HistoryBuffer, MessageHub, lengths, MMENGINE_PLAN, quick)


def mmengine_version(python: str | None = None) -> str:
    if python is None:
        import mmengine

        return str(mmengine.__version__)
    return _run_worker(python, ["--version-only"]).strip()


def _run_worker(python: str, args: list[str]) -> str:
    # Run from an empty directory so the checkout does not shadow packages.
    with tempfile.TemporaryDirectory() as scratch:
        try:
            completed = subprocess.run(
                [python, os.path.abspath(__file__), "--worker", *args],
                cwd=scratch,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as error:
            raise RuntimeError(f"cannot run {python}: {error}") from None
    if completed.returncode != 0:
        raise RuntimeError(
            f"MMEngine measurement with {python} failed:\n{completed.stderr.strip()}"
        )
    return completed.stdout


def measure_mmengine_in(python: str, lengths: list[int], quick: bool) -> Results:
    args = ["--lengths", ",".join(map(str, lengths))] + (["--quick"] if quick else [])
    raw = json.loads(_run_worker(python, args))
    return {operation: {int(k): v for k, v in per.items()} for operation, per in raw.items()}


def _mmengine_importable() -> bool:
    try:
        import mmengine.logging  # noqa: F401
    except ImportError:
        return False
    return True


def print_report(lengths: list[int], shmlog: Results, mmengine: Results | None, source: str) -> bool:
    """Print the table and the verdicts; return whether the targets were met."""
    print(f"median cost per update (max_length {MAX_LENGTH:,}); MMEngine: {source}")
    header = f"{'operation':<26} {'history':>9} {'shmlog':>10}"
    if mmengine is not None:
        header += f" {'mmengine':>10} {'mmengine/shmlog':>16}"
    print(header)
    print("-" * len(header))
    for operation in OPERATIONS:
        for length in lengths:
            ours = shmlog[operation][length]
            row = f"{operation:<26} {length:>9,} {format_ns(ours):>10}"
            if mmengine is not None:
                theirs = mmengine[operation][length]
                row += f" {format_ns(theirs):>10} {theirs / ours:>15.1f}x"
            print(row)
    print()
    ok = True
    first, last = lengths[0], lengths[-1]
    for operation in OPERATIONS:
        flat = shmlog[operation][last] / shmlog[operation][first]
        verdict = "ok" if flat <= FLATNESS_LIMIT else "NOT FLAT"
        ok &= flat <= FLATNESS_LIMIT
        print(
            f"shmlog {operation} flatness (cost at {last:,} / cost at {first:,}): "
            f"{flat:.2f}x  [{verdict}: target <= {FLATNESS_LIMIT}x]"
        )
    if mmengine is not None:
        for operation in OPERATIONS:
            speedup = mmengine[operation][first] / shmlog[operation][first]
            verdict = "ok" if speedup >= SPEEDUP_TARGET else "TOO SLOW"
            ok &= speedup >= SPEEDUP_TARGET
            print(
                f"{operation} speedup over MMEngine at history {first:,}: {speedup:.1f}x  "
                f"[{verdict}: target >= {SPEEDUP_TARGET}x]"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mmengine-python",
        metavar="PATH",
        help="measure MMEngine with this interpreter (in a subprocess)",
    )
    parser.add_argument("--no-mmengine", action="store_true", help="measure shmlog only")
    parser.add_argument(
        "--lengths",
        default=",".join(map(str, LENGTHS)),
        help="comma-separated history lengths (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches, for a smoke test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = sorted({int(x) for x in args.lengths.split(",")})
    for length in lengths:
        if length not in SHMLOG_PLAN:
            parser.error(f"history lengths must be among {LENGTHS}, got {length}")

    if args.worker:  # inside the MMEngine interpreter
        if args.version_only:
            print(mmengine_version())
        else:
            json.dump(measure_mmengine(lengths, args.quick), sys.stdout)
        return 0

    mmengine: Results | None = None
    source = "not measured"
    if not args.no_mmengine:
        if args.mmengine_python:
            try:
                version = mmengine_version(args.mmengine_python)
                mmengine = measure_mmengine_in(args.mmengine_python, lengths, args.quick)
            except RuntimeError as error:
                print(f"bench_history.py: {error}", file=sys.stderr)
                return 2
            source = f"{version} via {args.mmengine_python}"
        elif _mmengine_importable():
            source = f"{mmengine_version()} in this interpreter"
            mmengine = measure_mmengine(lengths, args.quick)
        else:
            source = "not importable here (use --mmengine-python PATH)"
    shmlog = measure_shmlog(lengths, args.quick)
    ok = print_report(lengths, shmlog, mmengine, source)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

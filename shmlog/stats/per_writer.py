"""Statistics per writer of a key: one figure for each thread that logged it.

A buffer's ``per_writer()`` splits its history by writer (a thread of some
process, labelled ``'rank1/worker0'`` and the like); what is computed over
that split lives here, for the per-worker figures of the progress path
(``shmlog.api.progress``) and of ShmlogHook (``shmlog.mmengine.hook``).
"""

from __future__ import annotations

import warnings

from .history_buffer import HistoryBuffer


def per_writer_means(buffer: HistoryBuffer, window: int | None, rank: int = -1) -> dict[str, float]:
    """The mean of the last ``window`` updates of each writer of ``buffer`` that has any.

    By label, sorted; ``rank``: only that rank's writers (``rank<r>`` and
    ``rank<r>/...``), -1: every writer.  A window longer than a writer's ring
    retains is computed on what it retains, without a warning (nor using up
    the key's one warning).
    """
    mine = f"rank{rank}" if rank >= 0 else None
    means = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, writer in sorted(buffer.per_writer().items()):
            if mine is not None and label.split("/")[0] != mine:
                continue
            if writer.storage.totals().updates:
                means[label] = float(HistoryBuffer.over(writer.storage, None).mean(window))
    return means

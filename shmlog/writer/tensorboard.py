"""The TensorBoard export's own process: ``python -m shmlog.writer.tensorboard DIR auto|on``.

Started by the log writer (``shmlog.writer.exports.TensorBoardProcess``).
Each line of standard input is one logged step, ``[values, step]`` as JSON;
the scalars go into a SummaryWriter under ``DIR/tensorboard``, flushed after
each step.  At the end of the input the writer is closed and the process
exits.  ``auto`` exports if tensorboardX (or torch with tensorboard) is
installed; ``on`` makes a missing one an error.  An error is said once on
stderr, and the rest of the input is read and dropped, so that the log
writer feeding it never blocks.
"""

from __future__ import annotations

import json
import sys

from .exports import summary_writer


def main(argv: list[str]) -> int:
    export_dir, mode = argv
    try:  # at once: the import overlaps the steps before the first logged one
        writer = summary_writer(export_dir, True if mode == "on" else None)
    except Exception as exc:  # noqa: BLE001 (said once; the log writer goes on)
        writer = _stopped(exc)
    for line in sys.stdin:
        if writer is None:
            continue  # read and dropped: the feeding log writer never blocks
        try:
            values, step = json.loads(line)
            for name, value in values.items():
                writer.add_scalar(name, value, step)
            writer.flush()
        except Exception as exc:  # noqa: BLE001
            writer.close()
            writer = _stopped(exc)
    if writer is not None:
        writer.close()
    return 0


def _stopped(exc: Exception) -> None:
    print(f"shmlog: TensorBoard export stopped: {type(exc).__name__}: {exc}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

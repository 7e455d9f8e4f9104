"""Entry point of the log-writer sidecar: ``python -m shmlog.api.sidecar_main SESSION``.

Kept apart from ``shmlog.api.designated`` because that module is imported with
the package, and running an already imported module with ``-m`` is unsafe.
"""

import sys

from .designated import main

sys.exit(main(sys.argv[1:]))

"""A pytest plugin that makes MMEngine's logging names mean shmlog's objects.

Loaded with ``-p mmengine_alias`` (``scripts/mmengine_tests.py`` does), before
pytest imports any test module, so MMEngine's own unit tests run unmodified
against shmlog:

* ``mmengine.logging.history_buffer``, ``.message_hub``, ``.logger`` and
  ``mmengine.runner.log_processor`` *are* shmlog's modules (in
  ``sys.modules`` and as package attributes), so ``mock.patch(
  'mmengine.logging.logger._get_rank', ...)`` patches what shmlog's MMLogger
  calls;
* the names the tests import (``mmengine.logging.MessageHub``,
  ``mmengine.runner.LogProcessor``, ``mmengine.utils.ManagerMixin``, ...) are
  shmlog's classes, as are the ones ``mmengine.testing.RunnerTestCase``
  clears after each test.

MMEngine is imported first, untouched, so its other classes (the Visualizer,
DefaultScope, registries) keep MMEngine's own base classes and metaclass.

``SHMLOG_ALIAS=0`` turns the plugin off: the tests then run against MMEngine.
"""

from __future__ import annotations

import importlib
import os
import sys

# MMEngine's module -> the shmlog object whose defining module replaces it.
MODULES = {
    "mmengine.logging.history_buffer": "HistoryBuffer",
    "mmengine.logging.message_hub": "MessageHub",
    "mmengine.logging.logger": "MMLogger",
    "mmengine.runner.log_processor": "LogProcessor",
}
# Where MMEngine exposes the names its tests import -> the names rebound there.
NAMES = {
    "mmengine": ("HistoryBuffer", "MessageHub", "MMLogger", "print_log"),
    "mmengine.logging": ("HistoryBuffer", "MessageHub", "MMLogger", "print_log"),
    "mmengine.runner": ("LogProcessor",),
    "mmengine.utils": ("ManagerMixin", "ManagerMeta"),
    "mmengine.utils.manager": ("ManagerMixin", "ManagerMeta"),
    "mmengine.testing.runner_test_case": ("MessageHub", "MMLogger"),
}


def alias() -> None:
    """Point MMEngine's logging modules and names at shmlog's (see the module docstring)."""
    import shmlog

    for name in ("mmengine", "mmengine.logging", "mmengine.runner", "mmengine.utils",
                 "mmengine.registry", "mmengine.testing.runner_test_case"):
        importlib.import_module(name)
    for old, obj in MODULES.items():
        module = importlib.import_module(getattr(shmlog, obj).__module__)
        sys.modules[old] = module
        package, _, attr = old.rpartition(".")
        setattr(sys.modules[package], attr, module)
    for where, names in NAMES.items():
        module = importlib.import_module(where)
        for name in names:
            setattr(module, name, getattr(shmlog, name))


if os.environ.get("SHMLOG_ALIAS", "1") != "0":
    alias()


def pytest_report_header(config: object) -> str:
    import mmengine

    if os.environ.get("SHMLOG_ALIAS", "1") == "0":
        return f"MMEngine's names: MMEngine {mmengine.__version__}'s own objects"
    import shmlog

    return (f"MMEngine's names: shmlog {shmlog.__version__} ({os.path.dirname(shmlog.__file__)}), "
            f"under MMEngine {mmengine.__version__}")

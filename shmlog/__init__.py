"""shmlog: MMEngine's logging model shared by every process on a node.

Outside a session everything works in one process, as in MMEngine.  After
``shmlog.init()`` every process on the node (ranks, DataLoader workers, other
children) shares MessageHub scalars and runtime info through POSIX shared
memory.
"""

from ._version import __version__
from .api.dataloader import track_data_time, worker_init_fn
from .api.job import JobConflict
from .api.logger import MMLogger, print_log
from .api.manager import ManagerMixin
from .api.message_hub import MessageHub
from .api.progress import report_progress
from .api.session import Session, current_session, init
from .api.steps import log_step
from .format.log_processor import LogProcessor
from .stats.history_buffer import HistoryBuffer

__all__ = [
    "HistoryBuffer",
    "JobConflict",
    "LogProcessor",
    "MMLogger",
    "ManagerMixin",
    "MessageHub",
    "Session",
    "__version__",
    "current_session",
    "init",
    "log_step",
    "print_log",
    "report_progress",
    "track_data_time",
    "worker_init_fn",
]

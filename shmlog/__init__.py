"""shmlog: MMEngine's logging model shared by every process on a node.

Outside a session everything works in one process, as in MMEngine.  After
``shmlog.init()`` every process on the node (ranks, DataLoader workers, other
children) shares MessageHub scalars and runtime info through POSIX shared
memory.
"""

from ._version import __version__
from .api.dataloader import track_data_time, worker_init_fn
from .api.device import device_values_stats, set_device_slots
from .api.logger import MMLogger, print_log
from .api.manager import ManagerMeta, ManagerMixin
from .api.message_hub import MessageHub
from .api.progress import report_progress
from .api.session import Session, current_session, init
from .api.steps import log_step
from .errors import (
    DescriptorLimitError,
    InvalidKey,
    InvalidType,
    InvalidValue,
    JobConflict,
    LogPathError,
    MetricsUnavailable,
    NotAScalar,
    PlotError,
    SegmentError,
    SegmentNotReady,
    SessionError,
    SessionGone,
    ShmFullError,
)
from .format.log_processor import LogProcessor
from .stats.history_buffer import HistoryBuffer

__all__ = [
    "DescriptorLimitError",
    "HistoryBuffer",
    "InvalidKey",
    "InvalidType",
    "InvalidValue",
    "JobConflict",
    "LogPathError",
    "LogProcessor",
    "MMLogger",
    "ManagerMeta",
    "ManagerMixin",
    "MessageHub",
    "MetricsUnavailable",
    "NotAScalar",
    "PlotError",
    "SegmentError",
    "SegmentNotReady",
    "Session",
    "SessionError",
    "SessionGone",
    "ShmFullError",
    "__version__",
    "current_session",
    "device_values_stats",
    "init",
    "log_step",
    "print_log",
    "report_progress",
    "set_device_slots",
    "track_data_time",
    "worker_init_fn",
]

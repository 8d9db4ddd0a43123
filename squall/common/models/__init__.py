"""The metadata database's tables."""

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.models.dag import DagModel
from squall.common.models.dagrun import DagRun
from squall.common.models.misc import (
    DEFAULT_POOL,
    CallbackRequest,
    ImportError_,
    Job,
    Pool,
    SerializedDagModel,
    TaskReschedule,
    XCom,
)
from squall.common.models.taskinstance import (
    TaskInstance,
    TaskInstanceKey,
    compare_and_set_state,
)

__all__ = [
    "DEFAULT_POOL",
    "Base",
    "CallbackRequest",
    "DagModel",
    "DagRun",
    "ImportError_",
    "Job",
    "Pool",
    "SerializedDagModel",
    "TaskInstance",
    "TaskInstanceKey",
    "TaskReschedule",
    "UtcDateTime",
    "XCom",
    "compare_and_set_state",
    "utcnow",
]

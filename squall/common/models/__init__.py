"""The metadata database's tables, one module a table (``base`` holds the declarative base and
the UTC column type); every name is re-exported here."""

from squall.common.models.audit_log import AuditLog
from squall.common.models.backfill import Backfill
from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.models.callback_request import CallbackRequest
from squall.common.models.connection import ConnectionModel
from squall.common.models.dag import DagModel
from squall.common.models.dag_file import DagFile
from squall.common.models.dagrun import DagRun, lock_runs
from squall.common.models.dataset import (
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskOutletDatasetReference,
    dagrun_dataset_event,
    dataset_alias_dataset,
)
from squall.common.models.import_error import ImportError_
from squall.common.models.job import Job
from squall.common.models.pool import DEFAULT_POOL, Pool
from squall.common.models.serialized_dag import SerializedDagModel
from squall.common.models.sla_miss import SlaMiss
from squall.common.models.task_reschedule import TaskReschedule
from squall.common.models.taskinstance import (
    MAX_STATE_REASON,
    TaskInstance,
    TaskInstanceKey,
    clip_reason,
    compare_and_set_state,
)
from squall.common.models.trigger import Trigger
from squall.common.models.user import User
from squall.common.models.variable import VariableModel
from squall.common.models.xcom import XCom

__all__ = [
    "DEFAULT_POOL",
    "MAX_STATE_REASON",
    "AuditLog",
    "Backfill",
    "Base",
    "CallbackRequest",
    "ConnectionModel",
    "DagFile",
    "DagModel",
    "DagRun",
    "DagScheduleDatasetAliasReference",
    "DagScheduleDatasetReference",
    "DatasetAliasModel",
    "DatasetDagRunQueue",
    "DatasetEvent",
    "DatasetModel",
    "ImportError_",
    "Job",
    "Pool",
    "SerializedDagModel",
    "SlaMiss",
    "TaskInstance",
    "TaskInstanceKey",
    "TaskOutletDatasetReference",
    "TaskReschedule",
    "Trigger",
    "User",
    "UtcDateTime",
    "VariableModel",
    "XCom",
    "clip_reason",
    "compare_and_set_state",
    "dagrun_dataset_event",
    "dataset_alias_dataset",
    "lock_runs",
    "utcnow",
]

"""Request and response shapes of the dataset routes, named as Airflow 2.10's OpenAPI
document names them and filled as its server fills them (``airflow/api_connexion/schemas/
dataset_schema.py``): where the server answers more than ``v1.yaml`` says (a dataset's
``aliases``, an event's ``id``, a created run's ``dag_run_id``, ``queued_events`` for the
document's ``datasets``), Squall answers what the server does."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from squall.api.schemas import CollectionInfo
from squall.api.schemas_runs import has_nul


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    """A body: unknown fields and NUL characters are a 400 (as Airflow's marshmallow
    schemas refuse unknown fields)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if has_nul(data):
            raise ValueError("NUL characters (\\u0000) are not allowed")
        return data


class TaskOutletDatasetReference(_Out):
    """A task whose outlets name the dataset (a producer)."""

    dag_id: str
    task_id: str
    created_at: str
    updated_at: str


class DagScheduleDatasetReference(_Out):
    """A DAG whose schedule names the dataset (a consumer)."""

    dag_id: str
    created_at: str
    updated_at: str


class DatasetAlias(_Out):
    """An alias an event attached to this dataset (Airflow 2.10's ``DatasetAliasSchema``;
    not in ``v1.yaml``)."""

    id: int
    name: str


class Dataset(_Out):
    id: int
    uri: str
    extra: dict[str, Any] | None
    created_at: str
    updated_at: str
    consuming_dags: list[DagScheduleDatasetReference]
    producing_tasks: list[TaskOutletDatasetReference]
    aliases: list[DatasetAlias]


class DatasetCollection(CollectionInfo):
    datasets: list[Dataset]


class BasicDAGRun(_Out):
    """A run an event created. Airflow's server names the run's id ``dag_run_id``
    (``BasicDAGRunSchema``'s ``data_key``); ``v1.yaml`` says ``run_id``."""

    dag_run_id: str
    dag_id: str
    logical_date: str
    start_date: str | None
    end_date: str | None
    state: Literal["queued", "running", "success", "failed"]
    data_interval_start: str | None
    data_interval_end: str | None


class DatasetEvent(_Out):
    """A recorded change of a dataset: by a producer task's successful try (``source_*``),
    or through ``POST /datasets/events`` (``source_*`` ``null``, ``extra`` with
    ``"from_rest_api": true``)."""

    id: int
    dataset_id: int
    dataset_uri: str
    extra: dict[str, Any] | None
    source_task_id: str | None
    source_dag_id: str | None
    source_run_id: str | None
    source_map_index: int | None
    created_dagruns: list[BasicDAGRun]
    timestamp: str


class DatasetEventCollection(CollectionInfo):
    dataset_events: list[DatasetEvent]


class QueuedEvent(_Out):
    """A consumer DAG's event of a dataset that no run has taken yet."""

    uri: str
    dag_id: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class QueuedEventCollection(CollectionInfo):
    """Airflow's server answers ``queued_events`` (``QueuedEventCollectionSchema``);
    ``v1.yaml`` says ``datasets``."""

    queued_events: list[QueuedEvent]


class CreateDatasetEvent(_In):
    """``POST /datasets/events``: an event of a dataset a DAG file names, from outside."""

    dataset_uri: str = Field(min_length=1, description="the dataset's URI")
    extra: dict[str, Any] | None = Field(default=None,
                                         description="the event's extra (a JSON object)")

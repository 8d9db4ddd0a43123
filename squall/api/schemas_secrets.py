"""Response shapes of the variables, connections and SLA misses routes: Airflow 2's
``Variable``, ``VariableCollection``, ``Connection``, ``ConnectionCollection`` schemas by
their names (a connection's password is never answered, as in Airflow), and Squall's own
``SlaMiss`` (Airflow 2's REST API has no SLA resource; the fields are its ``sla_miss``
table's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from squall.api.schemas import CollectionInfo


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variable(_Out):
    """A variable; ``value`` is ``***`` for a key that names a secret (``password``,
    ``secret``, ``api_key``, ... as Airflow masks them)."""

    key: str
    value: str
    description: str | None


class VariableCollection(CollectionInfo):
    variables: list[Variable]


class ConnectionCollectionItem(_Out):
    connection_id: str
    conn_type: str
    description: str | None
    host: str | None
    login: str | None
    #: Airflow's field name (``schema`` would shadow pydantic's ``BaseModel.schema``)
    schema_: str | None = Field(alias="schema")
    port: int | None


class Connection(ConnectionCollectionItem):
    """A connection without its password; in ``extra`` (JSON) the values of keys that name
    a secret are ``***``."""

    extra: str | None


class ConnectionCollection(CollectionInfo):
    connections: list[ConnectionCollectionItem]


class SlaMiss(_Out):
    """A task that had not succeeded by its scheduled run's ``data_interval_end`` plus its
    ``sla`` (``deadline``); ``notification_sent``: the DAG's ``sla_miss_callback`` /
    e-mail was run for it; ``email_sent``: the e-mail went out."""

    dag_id: str
    task_id: str
    run_id: str
    execution_date: str
    deadline: str
    timestamp: str
    notification_sent: bool
    email_sent: bool
    description: str | None


class SlaMissCollection(CollectionInfo):
    sla_misses: list[SlaMiss]

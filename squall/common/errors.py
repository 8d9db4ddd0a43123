"""Squall's exceptions.

Two families, kept apart:

* :class:`SquallError` and its subclasses are *failures*: something is wrong with a setting,
  a DAG file, a message, a database row.
* :class:`TaskControl` and its subclasses are how task code talks to the runner (skip me,
  fail me without retrying, reschedule me). They are control flow, not bugs, and the runner
  turns each into a task instance state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class SquallError(Exception):
    """Root of every Squall failure."""


class SettingsError(SquallError):
    """A setting has an invalid value or an unknown key; the message names the key."""


class DagDefinitionError(SquallError):
    """A DAG is malformed (bad argument, unknown task, wrong schedule)."""


class DatasetURIError(DagDefinitionError, ValueError):
    """A dataset URI Airflow 2.10 refuses (empty, whitespace, not ASCII, the reserved
    ``airflow`` scheme, longer than 3,000 characters); a ``ValueError`` as in Airflow."""


class DuplicateTaskIdError(DagDefinitionError):
    """Two tasks of one DAG share a task_id."""


class CycleError(DagDefinitionError):
    """The task dependencies of a DAG form a cycle."""


class DagNotFound(SquallError):
    """No DAG with that dag_id is known."""


class TaskNotFound(SquallError):
    """The DAG has no task with that task_id."""


class DagRunNotFound(SquallError):
    """No DAG run with that run_id."""


class DagRunAlreadyExists(SquallError):
    """A DAG run with that run_id or logical date already exists."""


class DatasetExpressionError(SquallError):
    """A DAG's stored dataset condition (``dag.dataset_expression``) is not an expression
    of Airflow's serialized form (a URI, ``all`` / ``any`` lists, an ``alias``)."""


class TriggerError(SquallError):
    """A manual run cannot be triggered as asked; the message says why. ``kind`` says
    which way, for the callers that answer with a status: ``not_found`` (no such DAG, or
    not active, or no usable serialized form), ``invalid`` (bad run id, date or conf; a DAG
    whose file has import errors) or ``exists`` (a run with that run id or logical date)."""

    NOT_FOUND = "not_found"
    INVALID = "invalid"
    EXISTS = "exists"

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class TriggerLoadError(SquallError):
    """A triggerer cannot rebuild a deferred task's trigger from its row (the class path
    does not import, names no ``BaseTrigger``, or the kwargs do not fit): the task
    instance is failed through ``next_method="__fail__"``, as Airflow does."""


class ParamValidationError(SquallError):
    """A DAG's or task's param has no value or one its JSON schema refuses; the message
    names the param (Airflow's ``airflow.exceptions.ParamValidationError``)."""


class DagFileLoadError(SquallError):
    """A DAG file could not be loaded (syntax error, exception at import, timeout)."""


class XComValueError(SquallError):
    """A value pushed to XCom cannot be serialised to JSON."""


class UnmappableXComError(XComValueError):
    """A task's return value cannot be expanded over by the mapped tasks downstream (Airflow's
    ``XComForMappingNotPushed``, ``UnmappableXComTypePushed``, ``UnmappableXComLengthPushed``):
    the task that returned it fails."""


class TemplateError(SquallError):
    """A templated field failed to render."""


class PayloadError(SquallError):
    """A message is not a well-formed, supported Squall command."""


class SerializationError(SquallError):
    """A DAG cannot be serialized, or serialized data cannot be turned back into a DAG."""


class TaskDeferralError(SquallError):
    """A deferred try cannot go on (Airflow: ``TaskDeferralError``): its trigger raised, or
    its trigger or execution timeout passed before the trigger fired. Raised when the try
    resumes on a worker with ``next_method="__fail__"``; the try fails (retried per
    ``retries``, as any failure of the task's code)."""


class DatabaseMigrationError(SquallError):
    """The metadata database could not be migrated, reset or inspected."""


class TaskLoadError(DagFileLoadError):
    """The DAG file or the task of a command cannot be loaded on this worker."""


class SupervisorCrashed(SquallError):
    """The supervisor process died without reporting."""


class CallbackFailed(SquallError):
    """The reason a task callback was called for, as its context's ``exception``."""


class BashCommandFailed(SquallError):
    """The bash command exited with a non-zero code (not one of ``skip_on_exit_code``)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InvalidBranchError(SquallError):
    """A branch callable returned something that is not a task or task group id."""


class AirflowCompatError(SquallError):
    """The Airflow compatibility layer cannot be installed (a real Airflow is importable)."""


class PoolError(SquallError):
    """A pool cannot be created, changed, found or deleted as asked; the message says why."""


class UserError(SquallError):
    """An API user cannot be created, found or deleted as asked; the message says why."""


class BackfillError(SquallError):
    """A backfill cannot be planned or created as asked; the message says why."""


class EmailError(SquallError):
    """An e-mail could not be sent (no recipient, the SMTP server unreachable after
    ``[smtp] smtp_retry_limit`` attempts, or it refused the message); the message says why."""


class CliError(SquallError):
    """A command cannot go on; the message is printed and the exit code is 1."""


class TaskControl(Exception):
    """Base of the exceptions task code raises to steer the runner."""


class TaskSkipped(TaskControl):
    """Mark this try skipped (Airflow: AirflowSkipException)."""


class TaskFailedNoRetry(TaskControl):
    """Fail this try and do not retry it (Airflow: AirflowFailException)."""


class TaskTimedOut(TaskControl):
    """The try ran past its execution_timeout (Airflow: AirflowTaskTimeout)."""


class SensorTimeout(TaskFailedNoRetry):
    """A sensor waited past its timeout (Airflow: AirflowSensorTimeout); never retried."""


class Reschedule(TaskControl):
    """Release the worker slot and run this try again at ``reschedule_date``."""

    def __init__(self, reschedule_date: datetime) -> None:
        super().__init__(f"reschedule at {reschedule_date.isoformat()}")
        self.reschedule_date = reschedule_date


class TaskDeferred(TaskControl):
    """Hand this try's wait to a triggerer (Airflow: TaskDeferred, raised by
    ``BaseOperator.defer``): the worker slot is released, the task instance becomes
    ``deferred``, and when ``trigger`` fires the try resumes on a worker by calling
    ``method_name(context, event=<payload>, **kwargs)``; past ``timeout`` it fails."""

    def __init__(self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None,
                 timeout: timedelta | None = None) -> None:
        super().__init__(f"deferred to {type(trigger).__name__}, resuming in {method_name}")
        self.trigger = trigger
        self.method_name = method_name
        self.kwargs = kwargs
        self.timeout = timeout

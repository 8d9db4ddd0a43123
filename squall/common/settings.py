"""Typed settings: defaults < optional ``squall.toml`` < ``SQUALL__SECTION__KEY`` variables.

A :class:`Settings` object is built once at each entry point (CLI, scheduler, worker, API)
with :meth:`Settings.load` and passed down. Nothing here is read at import time.

Keys are named as Airflow names them where it has one (``[core] dags_folder``,
``[database] sql_alchemy_conn``, ``[celery] broker_url`` ...). An unknown key or an
invalid value raises :class:`~squall.common.errors.SettingsError` naming the key and where
the value came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from squall.common.errors import SettingsError
from squall.common.lease_terms import check_lease, check_trigger_lease

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

ENV_PREFIX = "SQUALL__"
HOME_ENV = "SQUALL_HOME"
CONFIG_ENV = "SQUALL_CONFIG"


def fernet_keys(value: str) -> list[Fernet]:
    """The keys of a ``[core] fernet_key`` value (several separated by commas, the newest
    first); a ValueError naming the position of a malformed key, never its value. The
    setting is checked with it when it loads, and the secrets' codec
    (:class:`squall.secrets.fernet.FernetCodec`) is built with it."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:  # no encryption: cryptography is not even imported (issue 26)
        return []
    from cryptography.fernet import Fernet

    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(
                f"key {position} of {len(parts)} is not a Fernet key (32 bytes in URL-safe "
                "base64; make one with `squall rotate-fernet-key --generate`)") from None
    return keys


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class CoreSettings(_Section):
    dags_folder: str = ""  # default: $SQUALL_HOME/dags
    #: plugin modules (AirflowPlugin subclasses registering custom timetables)
    plugins_folder: str = ""  # default: $SQUALL_HOME/plugins
    #: where PythonVirtualenvOperator keeps its virtualenvs, one per requirement set
    venv_cache_path: str = ""  # default: $SQUALL_HOME/venv_cache
    load_examples: bool = False
    airflow_compat: bool = False
    #: the time zone of a DAG whose start_date is naive or missing: naive start / end dates
    #: are wall times there and its cron schedule ticks there
    default_timezone: str = "UTC"
    dagbag_import_timeout: float = Field(default=30.0, gt=0)
    dag_ignore_file_syntax: Literal["regexp", "glob"] = "regexp"
    parallelism: int = Field(default=32, ge=1)
    #: a DAG's max_active_tasks when its DAG file does not say
    max_active_tasks_per_dag: int = Field(default=16, ge=1)
    #: a DAG's max_active_runs when its DAG file does not say
    max_active_runs_per_dag: int = Field(default=16, ge=1)
    #: a DAG's max_consecutive_failed_dag_runs when its DAG file does not say (or says 0):
    #: the scheduler pauses a DAG after that many failed runs in a row; 0 = never
    max_consecutive_failed_dag_runs_per_dag: int = Field(default=0, ge=0)
    #: the slots of default_pool when a migration creates it (an existing pool keeps its own)
    default_pool_task_slot_count: int = Field(default=128, ge=1)
    execute_tasks_new_python_interpreter: bool = False
    #: a DAG the database has not seen yet starts paused, as in Airflow (`squall dags
    #: unpause`, the UI's switch, or its is_paused_upon_creation)
    dags_are_paused_at_creation: bool = True
    #: a task's retries when neither the task nor default_args say
    default_task_retries: int = Field(default=0, ge=0)
    #: the most task instances a mapped task expands into; an upstream whose return value
    #: is longer fails (Airflow's ``[core] max_map_length``)
    max_map_length: int = Field(default=1024, ge=1)
    #: the DAG processor records tasks that miss their ``sla`` (and runs the DAGs'
    #: ``sla_miss_callback``), as Airflow's ``[core] check_slas``
    check_slas: bool = True
    #: a run's ``conf`` overrides the DAG's and task's params of the same name in the
    #: tries' ``params`` (Airflow's default); false: ``params`` are the params alone
    dag_run_conf_overrides_params: bool = True
    #: Fernet key(s) encrypting variable values and connection passwords and extras in the
    #: database; several separated by commas (the first encrypts, all decrypt) to rotate
    fernet_key: str = ""

    @field_validator("fernet_key")
    @classmethod
    def _fernet_keys(cls, value: str) -> str:
        fernet_keys(value)
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import pendulum

        try:
            pendulum.timezone(value)
        except ValueError:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "'Europe/Amsterdam', or 'UTC')") from None
        return value


class DatabaseSettings(_Section):
    sql_alchemy_conn: str = ""  # default: sqlite:///$SQUALL_HOME/squall.db
    sql_alchemy_pool_size: int = Field(default=5, ge=0)
    sql_alchemy_max_overflow: int = Field(default=10, ge=0)
    sql_alchemy_pool_recycle: int = Field(default=1800, ge=-1)
    sql_alchemy_pool_pre_ping: bool = True


class CelerySettings(_Section):
    broker_url: str = ""  # default: the embedded broker under $SQUALL_HOME
    result_backend: str = ""  # default: the metadata database (db+...)
    worker_concurrency: int = Field(default=4, ge=1)
    operation_timeout: float = Field(default=1.0, gt=0)
    task_publish_max_retries: int = Field(default=3, ge=0)
    sync_parallelism: int = Field(default=0, ge=0)  # 0: max(1, cpu count - 1)
    visibility_timeout: int = Field(default=21600, ge=1)
    task_adoption_timeout: float = Field(default=600.0, gt=0)
    result_expires: int = Field(default=86400, ge=0)
    default_queue: str = Field(default="default", min_length=1)
    worker_send_task_events: bool = True
    #: keep each DAG file imported in the worker's pool process (re-imported when it or a
    #: module of the DAG folder changes); false: every try imports it afresh
    worker_cache_dag_files: bool = True
    #: fork each task process from a small fork server per pool process (which also keeps
    #: the DAG files imported), so the pool process does not fork; false: it forks them
    worker_fork_server: bool = True


class SchedulerSettings(_Section):
    job_heartbeat_sec: float = Field(default=5.0, gt=0)
    scheduler_heartbeat_sec: float = Field(default=5.0, gt=0)
    scheduler_idle_sleep_time: float = Field(default=1.0, gt=0)
    #: a RUNNING try whose supervisor has not heartbeated for this long is a zombie and is
    #: retried elsewhere; the supervisor's heartbeat lease (ADR 17) is this less a margin, so
    #: a database outage longer than that lease (47.5 s at the defaults) ends running tries
    zombie_threshold: float = Field(default=60.0, gt=0)
    zombie_detection_interval: float = Field(default=10.0, gt=0)
    task_queued_timeout: float = Field(default=600.0, gt=0)
    #: how often deferred task instances past their trigger timeout are failed, and unused
    #: trigger rows deleted (as Airflow's)
    trigger_timeout_check_interval: float = Field(default=15.0, gt=0)
    #: a scheduler whose job heartbeat is older than this is dead: others adopt its tasks
    scheduler_health_check_threshold: float = Field(default=30.0, gt=0)
    #: how often a running scheduler looks for task instances of dead schedulers
    orphaned_tasks_check_interval: float = Field(default=300.0, gt=0)
    max_tis_per_query: int = Field(default=512, ge=1)
    #: how often the DAG processor parses each DAG file it knows, changed or not (0: every
    #: scheduler loop)
    min_file_process_interval: float = Field(default=30.0, ge=0)
    #: how often the DAG processor stats the DAG files it knows: a changed one is parsed at
    #: once. Beside the folder's watch (or scan) a safety net, which also sees a symlinked
    #: file's target change outside the folder; 5 s, not 1 s: 1,000 stats a second were most
    #: of an idle DAG processor's own CPU (bench/RESULTS.md, "pickup")
    file_check_interval: float = Field(default=5.0, gt=0)
    #: how often the DAG processor lists the whole DAG folder again (0: every pass); a
    #: safety net: new, changed and removed files are found by the two settings below
    dag_dir_list_interval: float = Field(default=300.0, ge=0)
    #: watch the DAG folder with file-system notifications (inotify, FSEvents), so a new,
    #: changed or removed DAG file is seen within a couple of seconds; off, or where there
    #: are none (a network file system), the folder is scanned every dag_dir_poll_interval
    dag_dir_watch: bool = True
    #: how often the DAG folder is scanned for new, changed and removed files when it is not
    #: watched (names, sizes and modification times: no file is read)
    dag_dir_poll_interval: float = Field(default=2.0, gt=0)
    #: child processes the DAG processor parses DAG files in at a time (each parses a batch
    #: of files in turn)
    parsing_processes: int = Field(default=2, ge=1)
    #: how much those children lower their CPU priority (``nice``; 0: not at all), so that
    #: parsing yields the CPU to the scheduler loop and the workers
    parsing_nice: int = Field(default=10, ge=0, le=19)
    #: how long the DAG processor lets one task / DAG callback run before killing it
    callback_timeout: float = Field(default=60.0, gt=0)
    #: a DAG's catchup when its DAG file does not say
    catchup_by_default: bool = True


    @model_validator(mode="after")
    def _leaves_a_heartbeat_lease(self) -> SchedulerSettings:
        # a supervisor cut off from the database must stop its try before the watchdog may
        # call it a zombie (ADR 17): the threshold must leave room for a lease
        problem = check_lease(self.zombie_threshold, self.job_heartbeat_sec)
        if problem is not None:
            raise ValueError(problem)
        return self

class TriggererSettings(_Section):
    """``squall triggerer``: the asyncio service that runs deferred tasks' triggers."""

    #: the most triggers one triggerer runs at once (``squall triggerer --capacity``)
    default_capacity: int = Field(default=1000, ge=1)
    #: how often a triggerer heartbeats its job row, renews the lease of the triggers it
    #: holds and claims free ones
    job_heartbeat_sec: float = Field(default=5.0, gt=0)
    #: the take-over bound: a trigger whose triggerer has not renewed its lease for this long
    #: is taken by another triggerer; also how old a triggerer's heartbeat may be for
    #: ``squall jobs check --job-type triggerer``. A triggerer stops its triggers itself
    #: when it cannot renew their lease, which is this less a margin (see
    #: ``squall/common/lease_terms.py``), so one trigger never runs in two triggerers
    triggerer_health_check_threshold: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _leaves_a_trigger_lease(self) -> TriggererSettings:
        problem = check_trigger_lease(self.triggerer_health_check_threshold,
                                      self.job_heartbeat_sec)
        if problem is not None:
            raise ValueError(problem)
        return self


class LoggingSettings(_Section):
    base_log_folder: str = ""  # default: $SQUALL_HOME/logs
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: the services' consoles show their start-up, each DAG run's outcome, warnings and
    #: errors, and task output only in the task logs; false: every record at
    #: logging_level, the tasks' included. ``squall -v`` shows everything at DEBUG (ADR 34)
    quiet_console: bool = True
    #: the port each ``squall celery worker`` serves its task logs on (as Airflow's)
    worker_log_server_port: int = Field(default=8793, ge=1, le=65535)


class ApiSettings(_Section):
    """``squall api``: the REST API and the web UI (one process)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: signs the API's requests to the workers' log servers and the UI's sessions; every
    #: host of a deployment needs the same value (default: one made for this $SQUALL_HOME,
    #: kept in $SQUALL_HOME/secret_key, which suits a single host)
    secret_key: str = ""
    #: items in one page of a list when the request gives no ``limit``
    page_size: int = Field(default=100, ge=1)
    #: the largest ``limit`` a request may ask for
    maximum_page_limit: int = Field(default=1000, ge=1)
    #: server processes of ``squall api`` (one uses one core)
    workers: int = Field(default=1, ge=1)
    #: the time zone the web UI shows times in until a user picks another in its header
    #: (Airflow's ``[webserver] default_ui_timezone``): ``UTC``, an IANA name, or
    #: ``system`` (the browser's own zone)
    default_ui_timezone: str = "UTC"

    @field_validator("default_ui_timezone")
    @classmethod
    def _known_ui_timezone(cls, value: str) -> str:
        import pendulum

        if value == "system":
            return value
        try:
            pendulum.timezone(value)
        except ValueError:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "'Europe/Amsterdam', 'UTC' or 'system')") from None
        return value


class MetricsSettings(_Section):
    statsd_on: bool = False
    statsd_host: str = "localhost"
    statsd_port: int = Field(default=8125, ge=1, le=65535)
    statsd_prefix: str = "squall"


class SmtpSettings(_Section):
    """How e-mail is sent (task failure / retry alerts, SLA misses, ``EmailOperator``): as
    Airflow 2's ``[smtp]``, with its defaults. A login is made only when both
    ``smtp_user`` and ``smtp_password`` are set."""

    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    #: upgrade the connection with STARTTLS (ignored with ``smtp_ssl``)
    smtp_starttls: bool = True
    #: connect with TLS from the start (SMTPS, usually port 465)
    smtp_ssl: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_mail_from: str = "squall@example.com"
    #: seconds for each connection attempt and each command
    smtp_timeout: float = Field(default=30.0, gt=0)
    #: connection attempts before giving up on a message
    smtp_retry_limit: int = Field(default=5, ge=1)


_SECTIONS: dict[str, type[_Section]] = {
    "core": CoreSettings,
    "database": DatabaseSettings,
    "celery": CelerySettings,
    "scheduler": SchedulerSettings,
    "triggerer": TriggererSettings,
    "logging": LoggingSettings,
    "metrics": MetricsSettings,
    "api": ApiSettings,
    "smtp": SmtpSettings,
}


class Settings(BaseModel):
    """All of Squall's settings, one frozen object per process entry point."""

    model_config = ConfigDict(frozen=True)

    home: Path
    core: CoreSettings
    database: DatabaseSettings
    celery: CelerySettings
    scheduler: SchedulerSettings
    logging: LoggingSettings
    metrics: MetricsSettings
    api: ApiSettings
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    triggerer: TriggererSettings = Field(default_factory=TriggererSettings)
    #: where each non-default value came from, "section.key" -> "file PATH" / "env NAME"
    sources: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Settings:
        """Build settings from defaults, a TOML file and environment variables.

        The file is ``config_file``, else ``$SQUALL_CONFIG``, else ``$SQUALL_HOME/squall.toml``
        when it exists. ``overrides`` (section -> key -> value) win over everything; tests
        and the standalone command use them.
        """
        environ = os.environ if env is None else env
        home = Path(environ.get(HOME_ENV) or Path.home() / "squall").expanduser()
        raw: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        sources: dict[str, str] = {}

        path: Path | None
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise SettingsError(f"config file {path} does not exist")
        elif environ.get(CONFIG_ENV):
            path = Path(environ[CONFIG_ENV])
            if not path.is_file():
                raise SettingsError(f"{CONFIG_ENV}={path}: the file does not exist")
        else:
            candidate = home / "squall.toml"
            path = candidate if candidate.is_file() else None
        if path is not None:
            _merge_file(path, raw, sources)

        for name, value in environ.items():
            if not name.startswith(ENV_PREFIX):
                continue
            parts = name[len(ENV_PREFIX) :].lower().split("__")
            if len(parts) != 2 or not all(parts):
                raise SettingsError(
                    f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY"
                )
            section, key = parts
            _check_key(section, key, f"environment variable {name}")
            raw[section][key] = value
            sources[f"{section}.{key}"] = f"env {name}"

        for section, values in (overrides or {}).items():
            for key, value in values.items():
                _check_key(section, key, "override")
                raw[section][key] = value
                sources[f"{section}.{key}"] = "override"

        sections: dict[str, _Section] = {}
        for section, model in _SECTIONS.items():
            try:
                sections[section] = model.model_validate(raw[section])
            except ValidationError as exc:
                err = exc.errors()[0]
                if not err["loc"]:  # a rule across keys: its message names them
                    raise SettingsError(f"settings: {err['msg']}") from None
                key = str(err["loc"][0])
                origin = sources.get(f"{section}.{key}", "default")
                shown = "***" if (section, key) in SECRET_KEYS else repr(raw[section].get(key))
                raise SettingsError(
                    f"setting [{section}] {key} = {shown} ({origin}): "
                    f"{err['msg']}"
                ) from None
        return cls(home=home, sources=sources, **sections)  # type: ignore[arg-type]

    # Derived values: defaults that depend on $SQUALL_HOME.

    @property
    def dags_folder(self) -> Path:
        return Path(self.core.dags_folder).expanduser() if self.core.dags_folder else (
            self.home / "dags"
        )

    @property
    def plugins_folder(self) -> Path:
        return Path(self.core.plugins_folder).expanduser() if self.core.plugins_folder else (
            self.home / "plugins"
        )

    @property
    def venv_cache_path(self) -> Path:
        return Path(self.core.venv_cache_path).expanduser() if self.core.venv_cache_path \
            else self.home / "venv_cache"

    @property
    def sql_alchemy_conn(self) -> str:
        return self.database.sql_alchemy_conn or f"sqlite:///{self.home / 'squall.db'}"

    @property
    def log_folder(self) -> Path:
        folder = self.logging.base_log_folder
        return Path(folder).expanduser() if folder else self.home / "logs"

    def secret_key(self) -> str:
        """``[api] secret_key``, or the one kept in ``$SQUALL_HOME/secret_key`` (made, with
        owner-only permissions, the first time it is asked for)."""
        if self.api.secret_key:
            return self.api.secret_key
        import secrets

        path = self.home / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def get(self, section: str, key: str) -> Any:
        """The effective value of ``[section] key`` (derived defaults filled in)."""
        _check_key(section, key, "lookup")
        derived = {
            ("core", "dags_folder"): lambda: str(self.dags_folder),
            ("core", "plugins_folder"): lambda: str(self.plugins_folder),
            ("core", "venv_cache_path"): lambda: str(self.venv_cache_path),
            ("database", "sql_alchemy_conn"): lambda: self.sql_alchemy_conn,
            ("logging", "base_log_folder"): lambda: str(self.log_folder),
        }
        if (section, key) in derived:
            return derived[(section, key)]()
        return getattr(getattr(self, section), key)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every section and key with its effective value (a secret set shows as ``***``)."""
        return {
            section: {key: ("***" if (section, key) in SECRET_KEYS and self.get(section, key)
                            else self.get(section, key)) for key in model.model_fields}
            for section, model in _SECTIONS.items()
        }


#: Settings whose values are never shown (``squall config list``).
SECRET_KEYS = frozenset({("api", "secret_key"), ("core", "fernet_key"),
                         ("smtp", "smtp_password")})


def _check_key(section: str, key: str, origin: str) -> None:
    model = _SECTIONS.get(section)
    if model is None:
        raise SettingsError(
            f"{origin}: unknown setting [{section}] {key}: unknown section [{section}] "
            f"(known: {', '.join(sorted(_SECTIONS))})"
        )
    if key not in model.model_fields:
        raise SettingsError(f"{origin}: unknown setting [{section}] {key}")


def _merge_file(path: Path, raw: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise SettingsError(f"config file {path}: [{section}] must be a table")
        for key, value in values.items():
            _check_key(section, key, f"config file {path}")
            raw[section][key] = value
            sources[f"{section}.{key}"] = f"file {path}"

"""Settings.load: defaults < TOML file < SQUALL__SECTION__KEY variables < overrides.

Every test passes ``env`` explicitly (and points ``HOME`` at ``tmp_path`` where ``~`` matters)
so nothing here depends on the environment the tests run in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from squall.common.errors import SettingsError
from squall.common.settings import Settings


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def env_for(home: Path, **variables: str) -> dict[str, str]:
    return {"SQUALL_HOME": str(home), **variables}


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults_are_derived_from_squall_home(home: Path) -> None:
    settings = Settings.load(env=env_for(home))
    assert settings.home == home
    assert settings.dags_folder == home / "dags"
    assert settings.sql_alchemy_conn == f"sqlite:///{home / 'squall.db'}"
    assert settings.log_folder == home / "logs"
    assert settings.core.parallelism == 32
    assert settings.core.load_examples is False
    assert settings.logging.logging_level == "INFO"
    assert settings.logging.quiet_console is True
    # as in Airflow: a DAG the database has not seen starts paused
    assert settings.core.dags_are_paused_at_creation is True
    assert settings.sources == {}


def test_home_defaults_to_squall_under_the_user_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for env in ({}, {"SQUALL_HOME": ""}):
        settings = Settings.load(env=env)
        assert settings.home == tmp_path / "squall"
        assert settings.dags_folder == tmp_path / "squall" / "dags"


def test_squall_home_is_user_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.load(env={"SQUALL_HOME": "~/elsewhere"})
    assert settings.home == tmp_path / "elsewhere"
    assert settings.log_folder == tmp_path / "elsewhere" / "logs"


def test_explicit_paths_replace_the_derived_defaults(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings.load(env=env_for(
        home,
        SQUALL__CORE__DAGS_FOLDER="~/my_dags",
        SQUALL__DATABASE__SQL_ALCHEMY_CONN="postgresql://u@db/squall",
        SQUALL__LOGGING__BASE_LOG_FOLDER="/var/log/squall",
    ))
    assert settings.dags_folder == tmp_path / "my_dags"
    assert settings.sql_alchemy_conn == "postgresql://u@db/squall"
    assert settings.log_folder == Path("/var/log/squall")


def test_unrelated_variables_are_ignored(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL_OTHER="x", PATH="/bin",
                                         SQUALL_="y", squall__core__parallelism="3"))
    assert settings.core.parallelism == 32
    assert settings.sources == {}


# --------------------------------------------------------------------------- layering


def test_file_in_home_is_read(home: Path) -> None:
    path = write_toml(home / "squall.toml", """
[core]
parallelism = 8
load_examples = true
dag_ignore_file_syntax = "glob"

[celery]
default_queue = "fast"

[metrics]
statsd_port = 9090
""")
    settings = Settings.load(env=env_for(home))
    assert settings.core.parallelism == 8
    assert settings.core.load_examples is True
    assert settings.core.dag_ignore_file_syntax == "glob"
    assert settings.celery.default_queue == "fast"
    assert settings.metrics.statsd_port == 9090
    assert settings.sources == {
        "core.parallelism": f"file {path}",
        "core.load_examples": f"file {path}",
        "core.dag_ignore_file_syntax": f"file {path}",
        "celery.default_queue": f"file {path}",
        "metrics.statsd_port": f"file {path}",
    }


def test_squall_config_names_the_file(home: Path, tmp_path: Path) -> None:
    write_toml(home / "squall.toml", "[core]\nparallelism = 8\n")
    other = write_toml(tmp_path / "other.toml", "[core]\nparallelism = 9\n")
    settings = Settings.load(env=env_for(home, SQUALL_CONFIG=str(other)))
    assert settings.core.parallelism == 9
    assert settings.sources == {"core.parallelism": f"file {other}"}


def test_config_file_argument_wins_over_squall_config(home: Path, tmp_path: Path) -> None:
    env_file = write_toml(tmp_path / "env.toml", "[core]\nparallelism = 9\n")
    arg_file = write_toml(tmp_path / "arg.toml", "[core]\nparallelism = 10\n")
    settings = Settings.load(env=env_for(home, SQUALL_CONFIG=str(env_file)),
                             config_file=arg_file)
    assert settings.core.parallelism == 10
    assert settings.sources["core.parallelism"] == f"file {arg_file}"


def test_env_overrides_file(home: Path) -> None:
    path = write_toml(home / "squall.toml",
                      "[core]\nparallelism = 8\nmax_active_runs_per_dag = 2\n")
    settings = Settings.load(env=env_for(home, SQUALL__CORE__PARALLELISM="12"))
    assert settings.core.parallelism == 12
    assert settings.core.max_active_runs_per_dag == 2
    assert settings.sources == {
        "core.parallelism": "env SQUALL__CORE__PARALLELISM",
        "core.max_active_runs_per_dag": f"file {path}",
    }


def test_overrides_win_over_env_and_file(home: Path) -> None:
    write_toml(home / "squall.toml", "[core]\nparallelism = 8\n")
    settings = Settings.load(
        env=env_for(home, SQUALL__CORE__PARALLELISM="12",
                   SQUALL__METRICS__STATSD_PORT="9000"),
        overrides={"core": {"parallelism": 3}, "celery": {"worker_concurrency": 2}},
    )
    assert settings.core.parallelism == 3
    assert settings.metrics.statsd_port == 9000
    assert settings.celery.worker_concurrency == 2
    assert settings.sources == {
        "core.parallelism": "override",
        "metrics.statsd_port": "env SQUALL__METRICS__STATSD_PORT",
        "celery.worker_concurrency": "override",
    }


def test_env_key_case_does_not_matter_after_the_prefix(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__Core__Parallelism="5"))
    assert settings.core.parallelism == 5
    assert settings.sources == {"core.parallelism": "env SQUALL__Core__Parallelism"}


# --------------------------------------------------------------------------- parsing values


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("false", False), ("1", True), ("0", False),
    ("True", True), ("FALSE", False),
])
def test_bool_from_env(home: Path, raw: str, expected: bool) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__CORE__LOAD_EXAMPLES=raw,
                                         SQUALL__METRICS__STATSD_ON=raw))
    assert settings.core.load_examples is expected
    assert settings.metrics.statsd_on is expected


def test_invalid_bool_from_env(home: Path) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__CORE__LOAD_EXAMPLES="perhaps"))
    message = str(info.value)
    assert "[core] load_examples" in message
    assert "'perhaps'" in message
    assert "env SQUALL__CORE__LOAD_EXAMPLES" in message


def test_numbers_from_env(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__CELERY__OPERATION_TIMEOUT="2.5",
                                         SQUALL__METRICS__STATSD_PORT="8081"))
    assert settings.celery.operation_timeout == 2.5
    assert settings.metrics.statsd_port == 8081


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_logging_level_accepts_the_level_names(home: Path, level: str) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__LOGGING__LOGGING_LEVEL=level))
    assert settings.logging.logging_level == level


def test_logging_level_rejects_other_values(home: Path) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__LOGGING__LOGGING_LEVEL="CHATTY"))
    message = str(info.value)
    assert "[logging] logging_level" in message
    assert "'CHATTY'" in message
    assert "env SQUALL__LOGGING__LOGGING_LEVEL" in message


# --------------------------------------------------------------------------- errors


def test_invalid_value_from_env_names_key_value_and_variable(home: Path) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__CORE__PARALLELISM="abc"))
    message = str(info.value)
    assert "[core] parallelism" in message
    assert "'abc'" in message
    assert "env SQUALL__CORE__PARALLELISM" in message


def test_invalid_value_from_file_names_key_value_and_file(home: Path) -> None:
    path = write_toml(home / "squall.toml", "[metrics]\nstatsd_port = 70000\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home))
    message = str(info.value)
    assert "[metrics] statsd_port" in message
    assert "70000" in message
    assert f"file {path}" in message


def test_invalid_value_from_override_is_reported(home: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[core\] parallelism = 0 \(override\)"):
        Settings.load(env=env_for(home), overrides={"core": {"parallelism": 0}})


def test_invalid_env_value_wins_over_valid_file_value(home: Path) -> None:
    write_toml(home / "squall.toml", "[core]\nparallelism = 4\n")
    with pytest.raises(SettingsError, match="env SQUALL__CORE__PARALLELISM"):
        Settings.load(env=env_for(home, SQUALL__CORE__PARALLELISM="-1"))


@pytest.mark.parametrize(("text", "fragment"), [
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[core]\nnope = 1\n", "unknown setting [core] nope"),
    ("core = 1\n", "[core] must be a table"),
])
def test_unknown_or_malformed_entries_in_file(home: Path, text: str, fragment: str) -> None:
    path = write_toml(home / "squall.toml", text)
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home))
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("name", "fragment"), [
    ("SQUALL__NOPE__X", "unknown section [nope]"),
    ("SQUALL__CORE__NOPE", "unknown setting [core] nope"),
])
def test_unknown_env_variables(home: Path, name: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, **{name: "1"}))
    assert fragment in str(info.value)
    assert f"environment variable {name}" in str(info.value)


def test_api_settings_and_their_errors(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__API__PORT="9090"))
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 9090)
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__API__PORT="0"))
    assert "setting [api] port = '0' (env SQUALL__API__PORT)" in str(info.value)
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__API__HOSTNAME="x"))
    assert "unknown setting [api] hostname" in str(info.value)


def test_secret_key_is_made_once_per_home_unless_set(home: Path) -> None:
    settings = Settings.load(env=env_for(home))
    key = settings.secret_key()
    assert len(key) >= 32 and settings.secret_key() == key
    assert (home / "secret_key").stat().st_mode & 0o777 == 0o600
    configured = Settings.load(env=env_for(home, SQUALL__API__SECRET_KEY="s3"))
    assert configured.secret_key() == "s3"
    assert configured.as_dict()["api"]["secret_key"] == "***"  # never shown


def test_default_timezone_must_be_a_known_zone(home: Path) -> None:
    assert Settings.load(env=env_for(
        home, SQUALL__CORE__DEFAULT_TIMEZONE="Europe/Amsterdam")).core.default_timezone == (
        "Europe/Amsterdam")
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__CORE__DEFAULT_TIMEZONE="Mars/Olympus"))
    message = str(info.value)
    assert "[core] default_timezone = 'Mars/Olympus'" in message
    assert "env SQUALL__CORE__DEFAULT_TIMEZONE" in message
    assert "unknown time zone" in message


@pytest.mark.parametrize("name", [
    "SQUALL__CORE", "SQUALL__CORE__", "SQUALL____PARALLELISM", "SQUALL__CORE__PARALLELISM__X",
])
def test_malformed_env_variable_name(home: Path, name: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, **{name: "1"}))
    assert f"environment variable {name}" in str(info.value)
    assert "SQUALL__SECTION__KEY" in str(info.value)


def test_unknown_override(home: Path) -> None:
    with pytest.raises(SettingsError, match=r"override: unknown setting \[metrics\] nope"):
        Settings.load(env=env_for(home), overrides={"metrics": {"nope": 1}})


def test_missing_config_file_argument(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home), config_file=missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_missing_config_file_from_squall_config(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL_CONFIG=str(missing)))
    assert f"SQUALL_CONFIG={missing}" in str(info.value)
    assert "does not exist" in str(info.value)


def test_missing_file_in_home_is_fine(home: Path) -> None:
    assert not (home / "squall.toml").exists()
    assert Settings.load(env=env_for(home)).sources == {}


def test_bad_toml_syntax(home: Path) -> None:
    path = write_toml(home / "squall.toml", "[core\nparallelism = 8\n")
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home))
    assert f"config file {path}:" in str(info.value)


# --------------------------------------------------------------------------- the object


def test_settings_are_immutable(home: Path) -> None:
    settings = Settings.load(env=env_for(home))
    with pytest.raises(ValidationError):
        settings.core.parallelism = 1
    with pytest.raises(ValidationError):
        settings.home = Path("/elsewhere")
    assert settings.core.parallelism == 32
    assert settings.home == home


def test_get_returns_effective_values(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__CORE__PARALLELISM="7"))
    assert settings.get("core", "parallelism") == 7
    assert settings.get("core", "dags_folder") == str(home / "dags")
    assert settings.get("database", "sql_alchemy_conn") == f"sqlite:///{home / 'squall.db'}"
    assert settings.get("logging", "base_log_folder") == str(home / "logs")
    assert settings.get("celery", "default_queue") == "default"


@pytest.mark.parametrize(("section", "key", "fragment"), [
    ("core", "nope", "unknown setting [core] nope"),
    ("nope", "parallelism", "unknown section [nope]"),
])
def test_get_unknown_key(home: Path, section: str, key: str, fragment: str) -> None:
    settings = Settings.load(env=env_for(home))
    with pytest.raises(SettingsError) as info:
        settings.get(section, key)
    assert fragment in str(info.value)


def test_as_dict_lists_every_section_and_key(home: Path) -> None:
    settings = Settings.load(env=env_for(home, SQUALL__SCHEDULER__CATCHUP_BY_DEFAULT="false"))
    data = settings.as_dict()
    assert set(data) == {"core", "database", "celery", "scheduler", "logging", "metrics", "api",
                         "smtp", "triggerer"}
    for section, values in data.items():
        assert set(values) == set(type(getattr(settings, section)).model_fields)
        for key, value in values.items():
            assert value == settings.get(section, key)
    assert data["core"]["dags_folder"] == str(home / "dags")
    assert data["database"]["sql_alchemy_conn"] == f"sqlite:///{home / 'squall.db'}"
    assert data["logging"]["base_log_folder"] == str(home / "logs")
    assert data["scheduler"]["catchup_by_default"] is False


def test_smtp_defaults_are_airflows_and_the_password_is_secret(home: Path) -> None:
    settings = Settings.load(env=env_for(home))
    smtp = settings.smtp
    assert (smtp.smtp_host, smtp.smtp_port, smtp.smtp_starttls, smtp.smtp_ssl) == (
        "localhost", 25, True, False)
    assert (smtp.smtp_timeout, smtp.smtp_retry_limit) == (30.0, 5)
    settings = Settings.load(env=env_for(home, SQUALL__SMTP__SMTP_PASSWORD="hunter2",
                                         SQUALL__SMTP__SMTP_PORT="587"))
    assert settings.smtp.smtp_password == "hunter2" and settings.smtp.smtp_port == 587
    assert settings.as_dict()["smtp"]["smtp_password"] == "***"
    with pytest.raises(SettingsError) as info:
        Settings.load(env=env_for(home, SQUALL__SMTP__SMTP_PORT="0"))
    assert "[smtp] smtp_port" in str(info.value)


def test_the_default_ui_timezone_setting_is_checked(tmp_path: Path) -> None:
    env = {"SQUALL_HOME": str(tmp_path)}
    assert Settings.load(env=env).api.default_ui_timezone == "UTC"
    chosen = Settings.load(env={**env, "SQUALL__API__DEFAULT_UI_TIMEZONE": "Europe/Paris"})
    assert chosen.api.default_ui_timezone == "Europe/Paris"
    with pytest.raises(SettingsError, match="unknown time zone"):
        Settings.load(env={**env, "SQUALL__API__DEFAULT_UI_TIMEZONE": "Mars/Olympus"})

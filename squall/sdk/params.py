"""DAG and task params with JSON-schema validation (Airflow 2.10's ``airflow.models.param``).

A :class:`Param` holds a default value and a JSON schema made of its keyword arguments
(``type``, ``enum``, ``minimum`` / ``maximum``, ``format``, ``const``, ``title``, a nullable
``type=["null", "integer"]`` ...; ``schema=`` gives the whole schema instead). A
:class:`ParamsDict` maps names to Params: a plain value becomes a Param without a schema;
setting a name that holds a Param validates the new value against it; reading a name
returns the validated value; :meth:`ParamsDict.validate` validates them all and names the
first param that fails in its :class:`~squall.common.errors.ParamValidationError`.

Where Airflow validates, Squall does too (the same rules):

* a DAG that can be scheduled validates its params when it is built (``DAG.__init__``,
  Airflow's ``DAG.validate_schedule_and_params``): a param without a default, or whose
  default its schema refuses, makes the DAG file fail to import;
* every new run validates the DAG's params updated with the run's ``conf``
  (:func:`params_for_run`, called by :func:`squall.runs.run_creation.create_dag_run`, as
  Airflow's ``DAG.create_dagrun``), so a trigger with a bad conf creates nothing;
* a :class:`DagParam` (what ``@dag`` passes its function for each argument, and
  ``dag.param(name)``) is resolved when its task renders its templated fields: the run's
  ``conf`` value of that name, else its default, else the try's param;
* a try's context holds the DAG's params, updated with the task's, then with the run's
  ``conf`` when ``[core] dag_run_conf_overrides_params`` (:func:`process_params`), validated:
  a failure fails the try.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import ItemsView, Iterator, Mapping, MutableMapping, ValuesView
from datetime import datetime
from typing import Any, ClassVar

from squall.common.errors import ParamValidationError, SquallError
from squall.sdk.deprecation import warn_deprecated

__all__ = ["NOTSET", "ArgNotSet", "DagParam", "InvalidParams", "Param", "ParamsDict",
           "params_for_run", "process_params", "try_params"]


class ArgNotSet:
    """The type of :data:`NOTSET`: no default given (``None`` is a value)."""

    def __repr__(self) -> str:
        return "NOTSET"

    def __copy__(self) -> ArgNotSet:
        return self

    def __deepcopy__(self, memo: Any) -> ArgNotSet:
        return self


NOTSET: Any = ArgNotSet()

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # as jsonschema's checkers: a format applies to strings only
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "+00:00").replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _format_checker() -> Any:
    """jsonschema's format checker, with ``date-time`` checked even without the optional
    rfc3339-validator package (jsonschema skips the format when it is missing)."""
    from jsonschema import FormatChecker

    checker = FormatChecker()
    if "date-time" not in checker.checkers:
        checker.checks("date-time")(_is_rfc3339)
    return checker


def _non_rfc3339_datetime(value: Any) -> bool:
    """Airflow's fallback for ``format: date-time``: an ISO 8601 date-time that is not
    RFC 3339 (no ``T``, no offset ...) is accepted with a deprecation warning."""
    import pendulum

    if not isinstance(value, str):
        return False
    try:
        parsed = pendulum.parse(value)
    except Exception:  # any parse failure: not a date-time
        return False
    if not isinstance(parsed, datetime):
        return False
    warn_deprecated(f"The use of non-RFC3339 datetime: {value!r} is deprecated and will be "
                    "removed in a future release")
    return True


class Param:
    """A param's default value and the JSON schema its values must satisfy.

    ``Param(5, type="integer", minimum=1, description="how many")``; without schema keywords
    every value is valid. ``Param(type="string")`` has no default: a value must be given (in
    the run's ``conf``) before it validates.
    """

    __version__: ClassVar[int] = 1
    CLASS_IDENTIFIER = "__class"

    def __init__(self, default: Any = NOTSET, description: str | None = None,
                 **kwargs: Any) -> None:
        if default is not NOTSET:
            self._warn_if_not_json(default)
        self.value = default
        self.description = description
        self.schema: dict[str, Any] = kwargs.pop("schema") if "schema" in kwargs else kwargs

    def __copy__(self) -> Param:
        return Param(self.value, self.description, schema=self.schema)

    def __repr__(self) -> str:
        return f"Param({self.value!r}, description={self.description!r}, schema={self.schema!r})"

    @staticmethod
    def _warn_if_not_json(value: Any) -> None:
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            warn_deprecated("The use of non-json-serializable params is deprecated and will "
                            "be removed in a future release")

    def resolve(self, value: Any = NOTSET, suppress_exception: bool = False) -> Any:
        """Validate ``value`` (default: the Param's own) against the schema and make it the
        Param's value. Raises :class:`ParamValidationError` when there is no value or the
        schema refuses it, unless ``suppress_exception`` (then None is returned)."""
        import jsonschema
        from jsonschema.exceptions import ValidationError

        if value is not NOTSET:
            self._warn_if_not_json(value)
        final = self.value if value is NOTSET else value
        if final is NOTSET:
            if suppress_exception:
                return None
            raise ParamValidationError("No value passed and Param has no default value")
        if self.schema:
            try:
                jsonschema.validate(final, self.schema, format_checker=_format_checker())
            except ValidationError as err:
                if err.schema.get("format") == "date-time" and _non_rfc3339_datetime(final):
                    self.value = final
                    return final
                if suppress_exception:
                    return None
                raise ParamValidationError(err.message) from None
            except jsonschema.SchemaError as err:
                if suppress_exception:
                    return None
                raise ParamValidationError(f"the schema is not valid: {err.message}") from None
        self.value = final
        return final

    def dump(self) -> dict[str, Any]:
        """The Param as a dict: its class, ``value`` (None without a default),
        ``description`` and ``schema`` (what Airflow's REST API shows per param)."""
        return {self.CLASS_IDENTIFIER: f"{type(self).__module__}.{type(self).__name__}",
                "value": None if self.value is NOTSET else self.value,
                "description": self.description, "schema": self.schema}

    @property
    def has_value(self) -> bool:
        return self.value is not NOTSET and self.value is not None

    def serialize(self) -> dict[str, Any]:
        return {"value": self.value, "description": self.description, "schema": self.schema}

    @staticmethod
    def deserialize(data: Mapping[str, Any], version: int) -> Param:
        if version > Param.__version__:
            raise TypeError("serialized version > class version")
        return Param(default=data["value"], description=data["description"],
                     schema=data["schema"])


class ParamsDict(MutableMapping[str, Any]):
    """Params by name; values that are not Params become Params without a schema.

    ``params["x"]`` is the validated value (a :class:`ParamValidationError` when it does not
    validate, unless ``suppress_exception``); :meth:`get_param` is the Param itself.
    """

    __version__: ClassVar[int] = 1

    def __init__(self, dict_obj: Mapping[str, Any] | None = None,
                 suppress_exception: bool = False) -> None:
        self._params: dict[str, Param] = {
            k: v if isinstance(v, Param) else Param(v) for k, v in (dict_obj or {}).items()}
        self.suppress_exception = suppress_exception

    def __bool__(self) -> bool:
        return bool(self._params)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ParamsDict):
            return self.dump() == other.dump()
        if isinstance(other, dict):
            return self.dump() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> ParamsDict:
        return ParamsDict(self._params, self.suppress_exception)

    def __deepcopy__(self, memo: dict[int, Any] | None) -> ParamsDict:
        return ParamsDict(copy.deepcopy(self._params, memo), self.suppress_exception)

    def __contains__(self, key: object) -> bool:
        return key in self._params

    def __len__(self) -> int:
        return len(self._params)

    def __delitem__(self, key: str) -> None:
        del self._params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __repr__(self) -> str:
        return repr(self.dump())

    def __setitem__(self, key: str, value: Any) -> None:
        """A Param replaces the one under ``key``; another value is validated against the
        Param already there (and becomes its value), or becomes a new Param."""
        if isinstance(value, Param):
            param = value
        elif key in self._params:
            param = self._params[key]
            try:
                param.resolve(value=value, suppress_exception=self.suppress_exception)
            except ParamValidationError as exc:
                raise ParamValidationError(f"Invalid input for param {key}: {exc}") from None
        else:
            param = Param(value)
        self._params[key] = param

    def __getitem__(self, key: str) -> Any:
        return self._params[key].resolve(suppress_exception=self.suppress_exception)

    def get_param(self, key: str) -> Param:
        """The :class:`Param` under ``key``."""
        return self._params[key]

    def items(self) -> ItemsView[str, Param]:
        """(name, :class:`Param`) pairs, as Airflow's (not the values)."""
        return ItemsView(self._params)

    def values(self) -> ValuesView[Param]:
        return ValuesView(self._params)

    def update(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 1 and not kwargs and isinstance(args[0], ParamsDict):
            for key, param in args[0]._params.items():
                self[key] = param
            return
        super().update(*args, **kwargs)

    def dump(self) -> dict[str, Any]:
        """The values by name, None for those that do not validate."""
        return {k: v.resolve(suppress_exception=True) for k, v in self._params.items()}

    def validate(self) -> dict[str, Any]:
        """The validated values by name; a :class:`ParamValidationError` naming the first
        param that does not validate."""
        resolved: dict[str, Any] = {}
        for key, param in self._params.items():
            try:
                resolved[key] = param.resolve(suppress_exception=self.suppress_exception)
            except ParamValidationError as exc:
                raise ParamValidationError(f"Invalid input for param {key}: {exc}") from None
        return resolved

    def serialize(self) -> dict[str, Any]:
        return self.dump()

    @staticmethod
    def deserialize(data: Mapping[str, Any], version: int) -> ParamsDict:
        if version > ParamsDict.__version__:
            raise TypeError("serialized version > class version")
        return ParamsDict(data)


def params_for_run(params: Mapping[str, Any] | None,
                   conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """The DAG's ``params`` updated with a new run's ``conf``, validated (Airflow's
    ``DAG.create_dagrun``, whatever ``dag_run_conf_overrides_params`` says); a
    :class:`ParamValidationError` naming the param that fails."""
    merged = copy.deepcopy(params) if isinstance(params, ParamsDict) else ParamsDict(params)
    merged.update(dict(conf or {}))
    return merged.validate()


def process_params(dag_params: Mapping[str, Any] | None, task_params: Mapping[str, Any] | None,
                   conf: Mapping[str, Any] | None, *, conf_overrides: bool,
                   suppress_exception: bool = False) -> dict[str, Any]:
    """A try's ``params``: the DAG's, updated with the task's, then with the run's ``conf``
    when ``conf_overrides`` (``[core] dag_run_conf_overrides_params``), validated (Airflow's
    ``airflow.models.param.process_params``)."""
    params = ParamsDict(suppress_exception=suppress_exception)
    for layer in (dag_params, task_params):
        if not layer:
            continue
        if isinstance(layer, ParamsDict):
            params.update(copy.deepcopy(layer))
        else:
            params.update(dict(layer))
    if conf_overrides and conf:
        params.update(dict(conf))
    return params.validate()


class InvalidParams(dict[str, Any]):
    """A try's ``params`` that did not validate: the values that did (None for the rest),
    and the :class:`ParamValidationError`, which the try raises when it renders its
    templates (so the try fails as in Airflow, where building the context raises, while
    its failure callbacks still get a context)."""

    def __init__(self, values: Mapping[str, Any], error: ParamValidationError) -> None:
        super().__init__(values)
        self.error = error


def try_params(dag_params: Mapping[str, Any] | None, task_params: Mapping[str, Any] | None,
               conf: Mapping[str, Any] | None, *, conf_overrides: bool) -> dict[str, Any]:
    """:func:`process_params`, or an :class:`InvalidParams` when they do not validate."""
    try:
        return process_params(dag_params, task_params, conf, conf_overrides=conf_overrides)
    except ParamValidationError as exc:
        values = process_params(dag_params, task_params, conf, conf_overrides=conf_overrides,
                                suppress_exception=True)
        return InvalidParams(values, exc)


class DagParam:
    """A reference to the DAG param ``name``, resolved when a try renders its templated
    fields (Airflow's ``airflow.models.param.DagParam``): the run's ``conf[name]``, else
    ``default``, else the try's ``params[name]``. ``@dag`` passes one to its function for
    each argument; ``dag.param(name, default)`` makes one (setting the DAG's param when a
    default is given)."""

    def __init__(self, current_dag: Any, name: str, default: Any = NOTSET) -> None:
        if default is not NOTSET:
            current_dag.params[name] = default
        self._name = name
        self._default = default

    def __repr__(self) -> str:
        return f"DagParam({self._name!r})"

    def resolve(self, context: Mapping[str, Any]) -> Any:
        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        if self._name in conf:
            return conf[self._name]
        if self._default is not NOTSET:
            return self._default
        params = context.get("params") or {}
        if self._name in params:
            return params[self._name]
        raise SquallError(f"No value could be resolved for parameter {self._name}")

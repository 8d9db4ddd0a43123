"""PythonSensor: wait until a Python callable returns something true."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from squall.sdk.operators.base import Context
from squall.sdk.operators.python import call_with_context, require_callable
from squall.sdk.sensors.base import BaseSensorOperator, PokeReturnValue

log = logging.getLogger(__name__)


class PythonSensor(BaseSensorOperator):
    """Pokes by calling ``python_callable`` the way PythonOperator calls it (``op_args``,
    ``op_kwargs``, the context entries its signature names, ``templates_dict``).

    A truthy result (or a :class:`PokeReturnValue` that is done) ends the wait; the
    ``xcom_value`` of a PokeReturnValue is the task's result.
    """

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        require_callable(python_callable, kwargs.get("task_id"))
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args: Any = op_args if op_args is not None else []
        self.op_kwargs: Any = op_kwargs if op_kwargs is not None else {}
        self.templates_dict = templates_dict

    def poke(self, context: Context) -> bool | PokeReturnValue:
        log.info("Poking callable: %s", getattr(self.python_callable, "__name__", "?"))
        value = call_with_context(
            self.python_callable, self.op_args, self.op_kwargs, context, self.templates_dict
        )
        if isinstance(value, PokeReturnValue):
            return value
        return PokeReturnValue(bool(value))

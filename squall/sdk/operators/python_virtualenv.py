"""Run a Python function in another interpreter: ``PythonVirtualenvOperator`` (a virtualenv
made from ``requirements``, cached) and ``ExternalPythonOperator`` (an existing interpreter),
with their branching variants (Airflow 2's ``airflow.operators.python``).

As Airflow's ``_execute_python_callable_in_subprocess``: the function's *source* (its
decorators left out) is written into a script with a small runner; the arguments
(``op_args``, ``op_kwargs``, the serializable context entries the signature names and
``templates_dict``) go to the script in a file written with ``serializer`` (``pickle``,
``cloudpickle`` or ``dill``), the interpreter runs it, and the value the function returns
comes back the same way and becomes the task's XCom. ``string_args`` are lines the function
finds in the global ``virtualenv_string_args``. An exit code listed in ``skip_on_exit_code``
skips the task; any other failure fails it with the exception's message.

The function must be self-contained (imports inside it), as in Airflow: it does not run in
the DAG file's module.

Virtualenvs (:mod:`squall.sdk.operators.venv_cache`) are cached per requirement set
(``venv-<hash>`` under ``venv_cache_path`` or ``[core] venv_cache_path``); Airflow makes a
throw-away one per try unless ``venv_cache_path`` is given.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from pathlib import Path
from typing import Any

from squall.common.errors import DagDefinitionError, SquallError, TaskSkipped
from squall.sdk.deprecation import warn_deprecated
from squall.sdk.operators.base import Context
from squall.sdk.operators.python import PythonOperator, SkipMixin, determine_kwargs

log = logging.getLogger(__name__)

__all__ = [
    "SERIALIZABLE_CONTEXT_KEYS",
    "BranchExternalPythonOperator",
    "BranchPythonVirtualenvOperator",
    "ExternalPythonOperator",
    "PythonVirtualenvOperator",
    "function_source",
]

SERIALIZERS = ("pickle", "cloudpickle", "dill")

#: the context entries a function in another interpreter can be given (plain strings;
#: Airflow's BASE_SERIALIZABLE_CONTEXT_KEYS, those Squall's context has)
SERIALIZABLE_CONTEXT_KEYS = frozenset({
    "ds", "ds_nodash", "expanded_ti_count", "inlets", "map_index_template", "next_ds",
    "next_ds_nodash", "outlets", "prev_ds", "prev_ds_nodash", "run_id",
    "task_instance_key_str", "test_mode", "tomorrow_ds", "tomorrow_ds_nodash", "ts",
    "ts_nodash", "ts_nodash_with_tz", "yesterday_ds", "yesterday_ds_nodash",
})

_RUNNER = '''
# --- Squall runner: arguments in, result out ({serializer})
import {serializer} as _squall_serializer
with open(sys.argv[1], "rb") as _f:
    _squall_args = _squall_serializer.load(_f)
with open(sys.argv[3]) as _f:
    virtualenv_string_args = [_line.strip() for _line in _f]
try:
    _squall_result = {name}(*_squall_args["args"], **_squall_args["kwargs"])
except Exception as _e:
    with open(sys.argv[4], "w") as _f:
        _f.write(f"{{type(_e).__name__}}: {{_e}}")
    raise
with open(sys.argv[2], "wb") as _f:
    if _squall_result is not None:
        _squall_serializer.dump(_squall_result, _f)
'''


def function_source(func: Callable[..., Any]) -> str:
    """The source of ``func`` from its ``def`` line (decorators such as
    ``@task.virtualenv(...)`` left out), dedented."""
    source = textwrap.dedent(inspect.getsource(func))
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                node.name == func.__name__:
            return "\n".join(source.splitlines()[node.lineno - 1:]) + "\n"
    raise DagDefinitionError(f"cannot find the source of function {func.__name__}")


def _skip_codes(value: int | Container[int] | None) -> Container[int]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return value


class _BasePythonVirtualenvOperator(PythonOperator):
    """What both operators share: the script, the serializer and the subprocess."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        serializer: str | None = None,
        string_args: Iterable[str] | None = None,
        expect_airflow: bool = True,
        skip_on_exit_code: int | Container[int] | None = None,
        env_vars: dict[str, str] | None = None,
        inherit_env: bool = True,
        use_dill: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if not isinstance(python_callable, types.FunctionType) or \
                python_callable.__name__ == "<lambda>":
            raise DagDefinitionError(f"task {task_id}: {type(self).__name__} only supports "
                                     "functions (not lambdas or other callables)")
        if inspect.isgeneratorfunction(python_callable):
            raise DagDefinitionError(f"task {task_id}: {type(self).__name__} does not support "
                                     "'yield' in python_callable")
        super().__init__(python_callable=python_callable, **kwargs)
        if use_dill:
            warn_deprecated(f"{type(self).__name__}({task_id!r}): use_dill is deprecated; "
                            "use serializer='dill'")
            if serializer:
                raise DagDefinitionError(
                    f"task {task_id}: both use_dill and serializer are set; set only one")
            serializer = "dill"
        serializer = serializer or "pickle"
        if serializer not in SERIALIZERS:
            raise DagDefinitionError(
                f"task {task_id}: unsupported serializer {serializer!r}; expected one of "
                f"{', '.join(map(repr, SERIALIZERS))}")
        self.serializer = serializer
        self.string_args = list(string_args or [])
        self.expect_airflow = expect_airflow  # no effect: Airflow is never in the venv
        self.skip_on_exit_code = _skip_codes(skip_on_exit_code)
        self.env_vars = env_vars
        self.inherit_env = inherit_env

    def interpreter(self) -> Path:
        """The Python to run the function with (made ready if needed)."""
        raise NotImplementedError

    def execute_callable(self, context: Context) -> Any:
        python = self.interpreter()
        serializable = {k: v for k, v in context.items() if k in SERIALIZABLE_CONTEXT_KEYS}
        available = {**serializable, **(self.op_kwargs or {})}
        if self.templates_dict:
            available["templates_dict"] = self.templates_dict
        args = list(self.op_args or [])
        kwargs = determine_kwargs(self.python_callable, args, available)
        return self.run_in_subprocess(python, args, kwargs)

    def run_in_subprocess(self, python: Path, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run the function's source with ``python``; its return value (or a skip/failure)."""
        try:
            pickler = importlib.import_module(self.serializer)
        except ImportError:
            raise SquallError(f"task {self.task_id}: serializer {self.serializer!r} is not "
                              "installed on this worker") from None
        with tempfile.TemporaryDirectory(prefix="squall-venv-call") as tmp:
            folder = Path(tmp)
            paths = [folder / n for n in ("script.in", "script.out", "string_args.txt",
                                          "termination.log")]
            script = folder / "script.py"
            paths[0].write_bytes(pickler.dumps({"args": args, "kwargs": kwargs}))
            paths[2].write_text("\n".join(map(str, self.string_args)))
            script.write_text(
                "from __future__ import annotations\nimport sys\n\n"
                + function_source(self.python_callable)
                + _RUNNER.format(serializer=self.serializer, name=self.python_callable.__name__))
            env = dict(os.environ) if self.inherit_env else {}
            env.update(self.env_vars or {})
            code = _run_logged([str(python), str(script), *map(str, paths)], env)
            if code in self.skip_on_exit_code:
                raise TaskSkipped(f"Process exited with code {code}. Skipping.")
            if code != 0:
                detail = paths[3].read_text().strip() if paths[3].exists() else ""
                raise SquallError(f"task {self.task_id}: the function failed in {python} "
                                  f"(exit code {code})" + (f": {detail}" if detail else ""))
            if paths[1].stat().st_size == 0:
                return None
            return pickler.loads(paths[1].read_bytes())


def _run_logged(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd``, each line of its output a log record; its exit code."""
    log.info("Executing cmd: %s", " ".join(cmd))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("%s", line.rstrip("\n"))
        return proc.wait()


class PythonVirtualenvOperator(_BasePythonVirtualenvOperator):
    """Run the function in a virtualenv with ``requirements`` installed by pip.

    ``python_version`` picks the interpreter (``python3.11`` on ``PATH``; this worker's own
    when it matches); ``system_site_packages`` (default True, as Airflow) lets the venv see
    the base interpreter's packages; ``pip_install_options`` and ``index_urls`` go to pip.
    The venv is cached per requirement set (see :mod:`squall.sdk.operators.venv_cache`).
    """

    template_fields: Sequence[str] = ("requirements", "index_urls", "venv_cache_path",
                                      "templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        requirements: Iterable[str] | str | None = None,
        python_version: str | None = None,
        system_site_packages: bool = True,
        pip_install_options: list[str] | None = None,
        index_urls: Collection[str] | str | None = None,
        venv_cache_path: os.PathLike[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if python_version is not None and str(python_version)[0] != str(sys.version_info.major) \
                and (kwargs.get("op_args") or kwargs.get("op_kwargs")):
            raise DagDefinitionError(
                f"task {task_id}: op_args and op_kwargs cannot be passed across Python major "
                "versions; use string_args")
        super().__init__(python_callable=python_callable, **kwargs)
        if not requirements:
            self.requirements: list[str] = []
        elif isinstance(requirements, str):
            self.requirements = [requirements]
        else:
            self.requirements = list(requirements)
        self.python_version = None if python_version is None else str(python_version)
        self.system_site_packages = system_site_packages
        self.pip_install_options = list(pip_install_options or [])
        if isinstance(index_urls, str):
            self.index_urls: list[str] = [index_urls]
        else:
            self.index_urls = list(index_urls or [])
        self.venv_cache_path = venv_cache_path

    def requirements_list(self) -> list[str]:
        """The requirements to install, sorted (the serializer's module added when the venv
        does not see the system's packages), as Airflow's ``_requirements_list``."""
        requirements = [str(r) for r in self.requirements]
        if not self.system_site_packages and self.serializer != "pickle" \
                and self.serializer not in requirements:
            requirements.append(self.serializer)
        return sorted(requirements)

    def interpreter(self) -> Path:
        from squall.sdk.operators.venv_cache import VenvSpec, cache_folder, ensure_venv

        spec = VenvSpec(
            requirements=tuple(self.requirements_list()),
            python=base_python(self.python_version),
            system_site_packages=self.system_site_packages,
            pip_install_options=tuple(self.pip_install_options),
            index_urls=tuple(self.index_urls))
        folder = Path(self.venv_cache_path) if self.venv_cache_path else cache_folder()
        return ensure_venv(folder, spec)


def base_python(python_version: str | None) -> str:
    """The interpreter a venv is made from: this worker's own Python (its base installation)
    when ``python_version`` is None or names it, else ``python<version>`` on ``PATH``."""
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python_version is None or python_version in (own, str(sys.version_info.major)):
        return sys.executable
    found = shutil.which(f"python{python_version}")
    if found is None:
        raise SquallError(f"python_version {python_version!r}: no python{python_version} on "
                          "this worker's PATH")
    return found


class ExternalPythonOperator(_BasePythonVirtualenvOperator):
    """Run the function with an existing interpreter, ``python`` (a path, as Airflow's)."""

    template_fields: Sequence[str] = ("python", "templates_dict", "op_args", "op_kwargs")

    def __init__(self, *, python: str, python_callable: Callable[..., Any],
                 **kwargs: Any) -> None:
        if not python:
            raise DagDefinitionError(f"task {kwargs.get('task_id')}: python must be the path "
                                     "of a Python interpreter")
        super().__init__(python_callable=python_callable, **kwargs)
        self.python = python

    def interpreter(self) -> Path:
        path = Path(self.python)
        if not path.exists():
            raise SquallError(f"task {self.task_id}: Python Path '{path}' must exists")
        if not path.is_file():
            raise SquallError(f"task {self.task_id}: Python Path '{path}' must be a file")
        if not path.is_absolute():
            raise SquallError(f"task {self.task_id}: Python Path '{path}' must be an absolute "
                              "path.")
        return path


class BranchPythonVirtualenvOperator(PythonVirtualenvOperator, SkipMixin):
    """A PythonVirtualenvOperator whose function returns the task id(s) to follow."""

    def execute(self, context: Context) -> Any:
        branch = super().execute(context)
        self.skip_all_except(context, branch)
        return branch


class BranchExternalPythonOperator(ExternalPythonOperator, SkipMixin):
    """An ExternalPythonOperator whose function returns the task id(s) to follow."""

    def execute(self, context: Context) -> Any:
        branch = super().execute(context)
        self.skip_all_except(context, branch)
        return branch

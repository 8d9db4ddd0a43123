"""Arguments Airflow 2 still accepts with a deprecation warning, accepted the same way.

Each such argument is listed in docs/airflow-compat.md. Using one emits a
:class:`DeprecatedArgumentWarning` that names the argument and what replaces it, pointing
at the line of the DAG file that passed it; the argument then has the effect it has in
Airflow 2.10 (``task_concurrency`` sets ``max_active_tis_per_dag``, ``provide_context``
does nothing, ...). An argument that is not accepted at all is still an error.

The DAG file loader (:func:`squall.dag_processing.loading.load_file`) records the warnings
a file's import emits and logs them; they never make the file fail to load.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["DeprecatedArgumentWarning", "warn_deprecated"]

_SDK_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class DeprecatedArgumentWarning(DeprecationWarning):
    """An Airflow 2 argument that still works but has a newer name (or none is needed).

    ``airflow.exceptions.RemovedInAirflow3Warning`` is this class under
    ``[core] airflow_compat``, so a DAG file's own warning filters for it apply.
    """


def warn_deprecated(message: str) -> None:
    """Emit ``message`` as a :class:`DeprecatedArgumentWarning` attributed to the first
    caller outside the authoring API (the DAG file, or a custom operator's ``__init__``)."""
    frame = sys._getframe(0)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_SDK_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, DeprecatedArgumentWarning, stacklevel=level)

"""Loading DAG files: into this process, or each in a child process with a time limit.

Two ways to load a DAG file:

* **in-process** (:func:`~squall.dag_processing.loading.load_file`, :class:`DagBag`): the
  file is imported into the calling process. Workers and ``squall dags test`` do this; they
  run user code anyway.
* **isolated** (:func:`~squall.dag_processing.isolated.parse_files_isolated`,
  :meth:`DagBag.parse_isolated`): the files are imported in child processes, a batch per
  child, each file with a time limit; what comes back is the *serialized* form of its DAGs
  or a readable error. The scheduler and the API only ever do this, so no user code runs in
  their own process.

:func:`~squall.dag_processing.sync.sync_to_db` writes the result of a parse to the ``dag``,
``serialized_dag`` and ``import_error`` tables;
:func:`~squall.dag_processing.sync.load_serialized_dags` rebuilds DAGs (with stand-in tasks)
from ``serialized_dag``: both live in :mod:`squall.dag_processing.sync`, which imports this
module (for :class:`ParseResult`) and not the other way round.

Which files are DAG files: :mod:`squall.dag_processing.files`. This module re-exports the
names of :mod:`~squall.dag_processing.loading` and :mod:`~squall.dag_processing.isolated`
that callers use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from squall.dag_processing.files import DEFAULT_IGNORE_FILE, IgnoreSyntax, list_dag_files
from squall.sdk.dag import DAG
from squall.sdk.dag_defaults import DagDefaults
from squall.sdk.examples import EXAMPLES_FOLDER

if TYPE_CHECKING:
    from squall.common.settings import Settings
from squall.dag_processing.isolated import (
    AUTO_FILES_PER_CHILD,
    FileStat,
    ParseResult,
    _merge_results,
    parse_files_isolated,
)
from squall.dag_processing.loading import FileLoadResult, _duplicate_message, load_file

__all__ = [
    "AUTO_FILES_PER_CHILD",
    "DEFAULT_IGNORE_FILE",
    "DagBag",
    "FileLoadResult",
    "FileStat",
    "IgnoreSyntax",
    "ParseResult",
    "list_dag_files",
    "load_file",
    "parse_files_isolated",
]

log = logging.getLogger(__name__)


class DagBag:
    """The DAGs of a folder, loaded in this process (workers, ``squall dags test``, the CLI).

    ``dags`` maps dag_id to DAG; ``import_errors`` maps a file path to a readable message.
    A dag_id defined by two files is kept from the first file (in sorted order) and reported
    as an import error of the other.
    """

    def __init__(
        self,
        dag_folder: str | os.PathLike[str],
        *,
        include_examples: bool = False,
        examples_folder: str | os.PathLike[str] | None = None,
        import_timeout: float = 30.0,
        ignore_file_syntax: IgnoreSyntax = "regexp",
        airflow_compat: bool = False,
        dag_defaults: DagDefaults | None = None,
        parsing_processes: int | None = None,
        parsing_nice: int = 0,
    ) -> None:
        self.airflow_compat = airflow_compat
        self.parsing_processes = parsing_processes
        self.parsing_nice = parsing_nice
        self.dag_defaults = dag_defaults
        self.dag_folder = Path(os.path.abspath(dag_folder))
        self.include_examples = include_examples
        self.examples_folder = Path(
            os.path.abspath(examples_folder) if examples_folder else EXAMPLES_FOLDER
        )
        self.import_timeout = import_timeout
        self.ignore_file_syntax: IgnoreSyntax = ignore_file_syntax
        self.dags: dict[str, DAG] = {}
        self.import_errors: dict[str, str] = {}
        self.collected = False

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      examples_folder: str | os.PathLike[str] | None = None) -> DagBag:
        """The bag of ``[core] dags_folder`` (and the examples with ``load_examples``), loaded
        as the settings say: import timeout, ignore file syntax, Airflow names, DAG defaults,
        and for :meth:`parse_isolated` ``[scheduler] parsing_processes`` and
        ``parsing_nice``."""
        core = settings.core
        return cls(settings.dags_folder, include_examples=core.load_examples,
                   examples_folder=examples_folder, import_timeout=core.dagbag_import_timeout,
                   ignore_file_syntax=core.dag_ignore_file_syntax,
                   airflow_compat=core.airflow_compat,
                   dag_defaults=DagDefaults.from_settings(settings),
                   parsing_processes=settings.scheduler.parsing_processes,
                   parsing_nice=settings.scheduler.parsing_nice)

    def _roots(self) -> list[Path]:
        roots = [self.dag_folder]
        if self.include_examples and self.examples_folder.is_dir():
            roots.append(self.examples_folder)
        return roots

    def files(self) -> list[tuple[Path, Path]]:
        """``(file, the folder it was found in)`` for every DAG file, in loading order."""
        out: list[tuple[Path, Path]] = []
        for root in self._roots():
            folder = root.parent if root.is_file() else root
            out.extend((f, folder)
                       for f in list_dag_files(root, syntax=self.ignore_file_syntax))
        return out

    def collect_in_process(self) -> dict[str, DAG]:
        """Import every DAG file into this process; fill and return ``dags`` (and
        ``import_errors``)."""
        self.dags, self.import_errors = {}, {}
        for path, root in self.files():
            loaded = load_file(path, root, timeout=self.import_timeout,
                               airflow_compat=self.airflow_compat,
                               dag_defaults=self.dag_defaults)
            errors = [loaded.error] if loaded.error else []
            for dag in loaded.dags:
                other = self.dags.get(dag.dag_id)
                if other is not None:
                    errors.append(_duplicate_message(dag.dag_id, other.fileloc))
                    continue
                self.dags[dag.dag_id] = dag
            if errors:
                self.import_errors[loaded.path] = "\n".join(errors)
        self.collected = True
        return self.dags

    def get_dag(self, dag_id: str) -> DAG | None:
        """The DAG ``dag_id`` (collecting the folder first if needed), or None."""
        if not self.collected:
            self.collect_in_process()
        return self.dags.get(dag_id)

    def parse_isolated(self, *, parallelism: int | None = None,
                       files: Iterable[tuple[Path, Path]] | None = None,
                       previous: Mapping[str, str] | None = None) -> ParseResult:
        """:func:`parse_files_isolated` on ``files`` (``(file, folder)`` pairs from an earlier
        :meth:`files`), by default on every DAG file of this bag; ``previous`` as there.
        ``parallelism`` defaults to the bag's ``parsing_processes``; the children are niced
        by its ``parsing_nice``."""
        by_root: dict[Path, list[Path]] = {}
        for path, root in self.files() if files is None else files:
            by_root.setdefault(root, []).append(path)
        if parallelism is None:
            parallelism = self.parsing_processes
        return _merge_results(
            parse_files_isolated(paths, root, self.import_timeout, parallelism=parallelism,
                                 airflow_compat=self.airflow_compat,
                                 dag_defaults=self.dag_defaults, previous=previous,
                                 nice=self.parsing_nice)
            for root, paths in by_root.items()
        )


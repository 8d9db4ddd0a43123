"""Plugins: the modules of ``[core] plugins_folder`` and the custom timetables they register.

As Airflow's ``plugins_manager``: each ``*.py`` file at the top of the folder (and each
package there) is imported once per process under its own name (``workday.py`` ->
``workday``), with the folder put on ``sys.path`` so DAG files import from it too; every
:class:`~squall.sdk.plugins.AirflowPlugin` subclass found in it is validated and its
``timetables`` registered by class path (``module.QualName``).

Who needs them: whoever parses DAG files (a custom timetable must be registered to be
serialized) and whoever rebuilds a serialized DAG that has one (the scheduler, the API, the
CLI). Both ask :func:`timetable_class`, which loads the folder of this process's settings
the first time (the scheduler thus imports the plugin files, as Airflow's does: the one place
where it runs user code, and only code the deployment put in its plugins folder).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from pathlib import Path

from squall.sdk.plugins import AirflowPlugin
from squall.sdk.timetables.airflow_builtin import CronTriggerTimetable, EventsTimetable
from squall.sdk.timetables.custom import class_path

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_TIMETABLES", "ensure_loaded", "load_plugins", "loaded_plugins",
           "timetable_class"]

#: Squall's own Airflow-shaped timetables, found without a plugin
BUILTIN_TIMETABLES: dict[str, type] = {
    class_path(cls): cls for cls in (CronTriggerTimetable, EventsTimetable)
}

_lock = threading.Lock()
_timetables: dict[str, type] = {}
_plugins: dict[str, type[AirflowPlugin]] = {}
_loaded_folders: set[str] = set()
#: plugin file -> its import error (as Airflow's ``plugins_manager.import_errors``)
import_errors: dict[str, str] = {}


def ensure_loaded(folder: Path | None = None, airflow_compat: bool | None = None) -> None:
    """Load ``folder`` once (default: this process's ``[core] plugins_folder``), with the
    ``airflow`` import name provided first when ``airflow_compat`` (default: this process's
    ``[core] airflow_compat``), since plugins import ``airflow.plugins_manager``."""
    if folder is None or airflow_compat is None:
        from squall.common.settings import Settings

        settings = Settings.load()
        folder = settings.plugins_folder if folder is None else folder
        airflow_compat = settings.core.airflow_compat if airflow_compat is None \
            else airflow_compat
    if airflow_compat:
        from squall.compat import airflow as airflow_compat_layer

        airflow_compat_layer.install()
    load_plugins(folder)


def load_plugins(folder: Path) -> list[type[AirflowPlugin]]:
    """Put ``folder`` on ``sys.path``, import its plugin modules (once per process and
    folder) and register their plugins; returns the plugins found now. A module that fails
    to import is logged and recorded in :data:`import_errors`; the others still load."""
    key = str(Path(folder).expanduser().resolve())
    with _lock:
        root = Path(key)
        if root.is_dir() and key not in sys.path:
            # again on each call: a parse child puts sys.path back before each DAG file
            sys.path.append(key)
        if key in _loaded_folders:
            return []
        _loaded_folders.add(key)
        if not root.is_dir():
            log.debug("plugins: no plugins folder at %s", root)
            return []
        found: list[type[AirflowPlugin]] = []
        for path in sorted(root.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if path.suffix == ".py" and path.is_file():
                name = path.stem
            elif path.is_dir() and (path / "__init__.py").is_file():
                name = path.name
            else:
                continue
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                import_errors[str(path)] = f"{type(exc).__name__}: {exc}"
                log.error("plugins: failed to import %s: %s: %s", path, type(exc).__name__, exc)
                continue
            for value in list(vars(module).values()):
                if (isinstance(value, type) and issubclass(value, AirflowPlugin)
                        and value is not AirflowPlugin and value not in found
                        and _register(value, path)):
                    found.append(value)
        return found


def _register(plugin: type[AirflowPlugin], path: Path) -> bool:
    try:
        plugin.validate()
    except Exception as exc:
        import_errors[str(path)] = f"{type(exc).__name__}: {exc}"
        log.error("plugins: %s in %s: %s", plugin.__qualname__, path, exc)
        return False
    plugin.on_load()
    _plugins[str(plugin.name)] = plugin
    for cls in plugin.timetables:
        _timetables[class_path(cls)] = cls
    unused = [a for a in AirflowPlugin.UNUSED if getattr(plugin, a, None)]
    if unused:
        log.warning("plugins: %s: Squall ignores %s (only timetables are used)",
                    plugin.name, ", ".join(unused))
    log.info("plugins: loaded %s from %s (%d timetable(s))", plugin.name, path,
             len(plugin.timetables))
    return True


def loaded_plugins() -> dict[str, type[AirflowPlugin]]:
    """The plugins loaded in this process, by name."""
    return dict(_plugins)


def timetable_class(path: str) -> type | None:
    """The timetable class registered as ``path`` (built in, or by a plugin of this
    process's plugins folder, loaded now if it was not), or None."""
    if path in BUILTIN_TIMETABLES:
        return BUILTIN_TIMETABLES[path]
    if path not in _timetables:
        ensure_loaded()
    return _timetables.get(path)


def registered_class_path(cls: type) -> str | None:
    """``cls``'s class path when it is registered (built in or by a plugin), else None."""
    path = class_path(cls)
    return path if timetable_class(path) is cls else None

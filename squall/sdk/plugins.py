"""``AirflowPlugin``: what a plugin file in ``[core] plugins_folder`` declares.

Squall uses a plugin's ``timetables`` (custom timetable classes the scheduler must be able
to rebuild from a serialized DAG, as Airflow's ``plugins_manager``); the other attributes
Airflow knows are accepted and ignored (a warning names them when they are not empty).
The folder is loaded by :mod:`squall.dag_processing.plugins`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from squall.common.errors import SquallError

__all__ = ["AirflowPlugin", "AirflowPluginException"]


class AirflowPluginException(SquallError):
    """A plugin is malformed (no name)."""


class AirflowPlugin:
    """Subclass it in a module of the plugins folder and list your timetables::

        class WorkdayPlugin(AirflowPlugin):
            name = "workday"
            timetables = [AfterWorkdayTimetable]
    """

    name: ClassVar[str | None] = None
    source: ClassVar[str | None] = None
    timetables: ClassVar[list[type[Any]]] = []
    # Airflow's other plugin points: accepted, not used by Squall
    hooks: ClassVar[list[Any]] = []
    executors: ClassVar[list[Any]] = []
    macros: ClassVar[list[Any]] = []
    admin_views: ClassVar[list[Any]] = []
    flask_blueprints: ClassVar[list[Any]] = []
    menu_links: ClassVar[list[Any]] = []
    appbuilder_views: ClassVar[list[Any]] = []
    appbuilder_menu_items: ClassVar[list[Any]] = []
    global_operator_extra_links: ClassVar[list[Any]] = []
    operator_extra_links: ClassVar[list[Any]] = []
    ti_deps: ClassVar[list[Any]] = []
    listeners: ClassVar[list[Any]] = []
    hook_lineage_readers: ClassVar[list[Any]] = []
    priority_weight_strategies: ClassVar[list[Any]] = []

    #: the attributes Squall ignores (a warning names the ones a plugin fills)
    UNUSED: ClassVar[tuple[str, ...]] = (
        "hooks", "executors", "macros", "admin_views", "flask_blueprints", "menu_links",
        "appbuilder_views", "appbuilder_menu_items", "global_operator_extra_links",
        "operator_extra_links", "ti_deps", "listeners", "hook_lineage_readers",
        "priority_weight_strategies")

    @classmethod
    def validate(cls) -> None:
        if not cls.name:
            raise AirflowPluginException(f"plugin {cls.__qualname__} needs a name")

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        """Called when the plugin is loaded (Airflow's hook; nothing by default)."""

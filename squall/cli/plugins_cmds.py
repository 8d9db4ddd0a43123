"""``squall plugins`` (Airflow 2's ``airflow plugins``): the plugins of ``[core]
plugins_folder`` this deployment loads, the timetables they register, and the plugin files
that failed to import."""

from __future__ import annotations

import argparse
import inspect

from squall.cli.common import CliContext, add_output_flag, print_rows

COLUMNS = ["name", "source", "timetables"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="the plugins of [core] plugins_folder and what they "
                       "register (custom timetables)")
    add_output_flag(p)
    p.set_defaults(func=plugins_cmd)


def plugins_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.dag_processing import plugins
    from squall.sdk.timetables.custom import class_path

    plugins.ensure_loaded(ctx.settings.plugins_folder, ctx.settings.core.airflow_compat)
    rows = [{"name": name, "source": inspect.getsourcefile(plugin) or "",
             "timetables": ", ".join(class_path(t) for t in plugin.timetables)}
            for name, plugin in sorted(plugins.loaded_plugins().items())]
    rows += [{"name": "(import error)", "source": path, "timetables": error}
             for path, error in sorted(plugins.import_errors.items())]
    print_rows(rows, COLUMNS, args.output, title=f"plugins in {ctx.settings.plugins_folder}")
    return 1 if plugins.import_errors else 0

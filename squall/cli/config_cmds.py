"""``squall config list | get SECTION KEY``."""

from __future__ import annotations

import argparse
import json

from squall.cli.common import CliContext, add_output_flag, print_rows

SECRET_HINTS = ("password", "secret", "token")


def register(sub: argparse._SubParsersAction) -> None:
    cfg = sub.add_parser(
        "config", help="show the effective settings",
        description="Settings come from defaults, then $SQUALL_HOME/squall.toml (or "
        "$SQUALL_CONFIG), then SQUALL__SECTION__KEY environment variables.")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = csub.add_parser("list", help="every setting with its value and where it came from")
    add_output_flag(p)
    p.set_defaults(func=list_settings)
    p = csub.add_parser("get", help="the value of one setting")
    p.add_argument("section")
    p.add_argument("key")
    p.set_defaults(func=get_setting)


def _display(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool | int | float) else str(value)


def _mask(key: str, value: str) -> str:
    from sqlalchemy.engine import make_url

    if any(h in key for h in SECRET_HINTS) and value:
        return "***"
    if "://" in value:
        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:
            return value
    return value


def list_settings(ctx: CliContext, args: argparse.Namespace) -> int:
    rows = []
    for section, values in ctx.settings.as_dict().items():
        for key, value in values.items():
            rows.append({"section": section, "key": key,
                         "value": _mask(key, _display(value)),
                         "source": ctx.settings.sources.get(f"{section}.{key}", "default")})
    print_rows(rows, ["section", "key", "value", "source"], args.output)
    return 0


def get_setting(ctx: CliContext, args: argparse.Namespace) -> int:
    print(_display(ctx.settings.get(args.section, args.key)))
    return 0

"""``squall variables list | get | set | delete | import | export`` (Airflow 2's
``airflow variables``).

The database work is :mod:`squall.secrets.variables`; this module parses arguments and files
and prints. In tables and JSON listings the value of a variable whose key looks sensitive
(``password``, ``token`` ...) is shown as ``***``; ``get`` prints the value asked for, and
``export`` writes every value (it is what ``import`` reads back).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.cli.common import CliContext, CliError, add_output_flag, print_rows
from squall.secrets.masking import MASK, is_sensitive_key

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from squall.secrets.fernet import FernetCodec
    from squall.secrets.variables import VariableRecord

log = logging.getLogger(__name__)

COLUMNS = ["key", "val", "description", "is_encrypted"]


def audit(session: Session, key: str, *, deleted: bool = False) -> None:
    """The audit entry of a change made here (never the value)."""
    from squall.runs import audit as audit_log

    audit_log.record_event(
        session, audit_log.VARIABLE_DELETE if deleted else audit_log.VARIABLE_EDIT,
        owner=audit_log.cli_owner(), source="cli", extra={"key": key})


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "variables", help="list, get, set, delete, import and export variables",
        description="Variables are a key -> text store tasks read with Variable.get(key) "
        "and templates with {{ var.value.key }} / {{ var.json.key.field }}. SQUALL_VAR_<KEY> "
        "(and AIRFLOW_VAR_<KEY> under [core] airflow_compat) environment variables take "
        "precedence over the table. Values are encrypted under [core] fernet_key.")
    vsub = parser.add_subparsers(dest="variables_command", required=True, metavar="COMMAND")

    p = vsub.add_parser("list", help="every variable in the table (sensitive values as ***)")
    add_output_flag(p)
    p.set_defaults(func=list_cmd)

    p = vsub.add_parser("get", help="print the value of a variable",
                        description="Prints the value of KEY: from SQUALL_VAR_<KEY> when set, "
                        "else from the table. A missing key is an error unless --default.")
    p.add_argument("key")
    p.add_argument("-d", "--default", help="print this when the variable does not exist")
    p.add_argument("-j", "--json", action="store_true", dest="deserialize_json",
                   help="parse the value as JSON and print it indented")
    p.set_defaults(func=get_cmd)

    p = vsub.add_parser("set", help="create a variable or replace its value")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--description", help="(kept as it is when not given)")
    p.add_argument("-j", "--json", action="store_true", dest="serialize_json",
                   help="VALUE is JSON: check it and store it normalised")
    p.set_defaults(func=set_cmd)

    p = vsub.add_parser("delete", help="delete a variable from the table")
    p.add_argument("key")
    p.set_defaults(func=delete_cmd)

    p = vsub.add_parser(
        "import", help="set the variables of a JSON file",
        description='Reads {"KEY": value, ...} (what `squall variables export` and `airflow '
        'variables export` write; a value that is not a string is stored as JSON) in one '
        "transaction: a file with any problem changes nothing.")
    p.add_argument("file", type=Path)
    p.add_argument("-a", "--action-on-existing-key", choices=("overwrite", "fail", "skip"),
                   default="overwrite", help="what to do with a key that exists already "
                   "(default: overwrite)")
    p.set_defaults(func=import_cmd)

    p = vsub.add_parser("export", help="write every variable to a JSON file (values in clear)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=export_cmd)


def _codec(ctx: CliContext) -> FernetCodec:
    from squall.secrets.fernet import FernetCodec

    return FernetCodec(ctx.settings.core.fernet_key)


def _row(record: VariableRecord) -> dict[str, Any]:
    value = record.value
    if value is not None and is_sensitive_key(record.key):
        value = MASK
    return {"key": record.key, "val": value, "description": record.description,
            "is_encrypted": record.is_encrypted}


def list_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import variables as store

    with session_scope(ctx.session_factory()) as session:
        records = store.list_variables(session, _codec(ctx))
    print_rows([_row(r) for r in records], COLUMNS, args.output)
    return 0


def get_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import backend as secrets_backend
    from squall.secrets import variables as store

    backend = secrets_backend.current()
    found = backend.variable_from_env(args.key)
    if found is not None:
        value: str | None = found[1]
    else:
        with session_scope(ctx.session_factory()) as session:
            record = store.read_variable(session, _codec(ctx), args.key)
        value = None if record is None else record.value
    if value is None:
        if args.default is None:
            raise CliError(f"variable {args.key} does not exist")
        value = args.default
    if args.deserialize_json:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise CliError(f"variable {args.key} is not valid JSON: {exc}") from None
        json.dump(parsed, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(value)
    return 0


def set_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.secrets import variables as store
    from squall.secrets.variables import VariableError

    value: Any = args.value
    if args.serialize_json:
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise CliError(f"variable {args.key}: the value is not valid JSON: {exc}") \
                from None
    try:
        with session_scope(ctx.session_factory()) as session:
            store.set_variable(session, _codec(ctx), args.key, value,
                               description=args.description,
                               serialize_json=args.serialize_json)
            audit(session, args.key)
    except VariableError as exc:
        raise CliError(str(exc)) from None
    except IntegrityError:
        raise CliError(f"variable {args.key} was created by someone else meanwhile; "
                       "retry") from None
    print(f"Variable {args.key} created")
    return 0


def delete_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import variables as store

    with session_scope(ctx.session_factory()) as session:
        existed = store.delete_variable(session, args.key)
        if existed:
            audit(session, args.key, deleted=True)
    if not existed:
        raise CliError(f"variable {args.key} does not exist")
    print(f"Variable {args.key} deleted")
    return 0


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not valid JSON: {exc}; nothing was imported") from None


def write_json_file(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=4, sort_keys=True) + "\n"
    try:
        # it holds secrets in clear: only its owner may read it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def import_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.secrets import variables as store
    from squall.secrets.variables import VariableError

    path: Path = args.file
    document = read_json_file(path)
    try:
        with session_scope(ctx.session_factory()) as session:
            done, skipped = store.import_variables(
                session, _codec(ctx), document, on_existing=args.action_on_existing_key)
            for key in done:
                audit(session, key)
    except VariableError as exc:
        raise CliError(f"{path}: {exc}; nothing was imported") from None
    except IntegrityError:
        raise CliError(f"{path}: a variable of it was created by someone else meanwhile; "
                       "nothing was imported, retry") from None
    print(f"{len(done)} of {len(document)} variables successfully updated."
          + (f" Skipped: {', '.join(skipped)}" if skipped else ""))
    return 0


def export_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import variables as store

    with session_scope(ctx.session_factory()) as session:
        document = store.export_variables(session, _codec(ctx))
    write_json_file(args.file, document)
    print(f"{len(document)} variables successfully exported to {args.file}")
    return 0

"""``squall connections list | get | add | delete | import | export`` (Airflow 2's
``airflow connections``) and ``squall rotate-fernet-key``.

The database work is :mod:`squall.secrets.connection_store`. Listings never show a password
(``***``) nor the sensitive fields of an extra; ``export`` writes everything in clear (it is
what ``import`` reads back), to a file only its owner can read.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squall.cli.common import CliContext, CliError, add_output_flag, print_rows
from squall.cli.variables_cmds import read_json_file, write_json_file
from squall.secrets.masking import MASK, SecretsMasker

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from squall.secrets.connections import Connection
    from squall.secrets.fernet import FernetCodec

log = logging.getLogger(__name__)

COLUMNS = ["conn_id", "conn_type", "description", "host", "schema", "login", "password",
           "port", "extra"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "connections", help="list, get, add, delete, import and export connections",
        description="Connections tell tasks how to reach external systems "
        "(BaseHook.get_connection(conn_id), {{ conn.conn_id.host }}). SQUALL_CONN_<CONN_ID> "
        "(and AIRFLOW_CONN_<CONN_ID> under [core] airflow_compat) environment variables, a "
        "URI or JSON, take precedence over the table. Passwords and extras are encrypted "
        "under [core] fernet_key.")
    csub = parser.add_subparsers(dest="connections_command", required=True, metavar="COMMAND")

    p = csub.add_parser("list", help="every connection in the table (passwords as ***)")
    add_output_flag(p)
    p.set_defaults(func=list_cmd)

    p = csub.add_parser("get", help="one connection, from the environment or the table")
    p.add_argument("conn_id")
    add_output_flag(p)
    p.set_defaults(func=get_cmd)

    p = csub.add_parser(
        "add", help="add a connection",
        description="Give either --conn-uri (conn-type://login:password@host:port/schema"
        "?extra_key=value, parts URL-quoted), or --conn-json, or --conn-type and the fields.")
    p.add_argument("conn_id")
    p.add_argument("--conn-uri", help="the connection in Airflow's URI form")
    p.add_argument("--conn-json", help="the connection as a JSON object of its fields")
    p.add_argument("--conn-type")
    p.add_argument("--conn-description")
    p.add_argument("--conn-host")
    p.add_argument("--conn-login")
    p.add_argument("--conn-password")
    p.add_argument("--conn-schema")
    p.add_argument("--conn-port")
    p.add_argument("--conn-extra", help="a JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing connection")
    p.set_defaults(func=add_cmd)

    p = csub.add_parser("delete", help="delete a connection from the table")
    p.add_argument("conn_id")
    p.set_defaults(func=delete_cmd)

    p = csub.add_parser(
        "import", help="add the connections of a JSON file",
        description='Reads {"CONN_ID": {"conn_type": ..., "host": ..., "extra": ...} or '
        '"URI", ...} (what `squall connections export` and `airflow connections export` '
        "write) in one transaction: a file with any problem changes nothing.")
    p.add_argument("file", type=Path)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing connections (default: refuse the file)")
    p.set_defaults(func=import_cmd)

    p = csub.add_parser("export", help="write every connection to a JSON file (in clear)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=export_cmd)

    p = sub.add_parser(
        "rotate-fernet-key", help="re-encrypt variables and connections under the first key",
        description="Rotating [core] fernet_key: put the new key first, keeping the old one "
        "after a comma (NEW,OLD); run this to re-encrypt every stored value under NEW (plain "
        "ones are encrypted too); then drop OLD from the setting.")
    p.add_argument("--generate", action="store_true",
                   help="only print a new random key to use, changing nothing")
    p.set_defaults(func=rotate_cmd)


def audit(session: Session, conn_id: str, *, deleted: bool = False) -> None:
    """The audit entry of a change made here (never the value, the password nor the extra)."""
    from squall.runs import audit as audit_log

    audit_log.record_event(
        session, audit_log.CONNECTION_DELETE if deleted else audit_log.CONNECTION_EDIT,
        owner=audit_log.cli_owner(), source="cli", extra={"conn_id": conn_id})


def _codec(ctx: CliContext) -> FernetCodec:
    from squall.secrets.fernet import FernetCodec

    return FernetCodec(ctx.settings.core.fernet_key)


def _row(conn: Connection) -> dict[str, Any]:
    row = {"conn_id": conn.conn_id, **conn.to_dict()}
    if conn.password:
        row["password"] = MASK
    if conn.extra:
        # a fresh masker: only the sensitive fields are hidden, not this process's secrets
        row["extra"] = SecretsMasker().redact(conn.extra_dejson) or "(not a JSON object)"
    return row


def list_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import connection_store as store

    with session_scope(ctx.session_factory()) as session:
        conns = store.list_connections(session, _codec(ctx))
    print_rows([_row(c) for c in conns], COLUMNS, args.output)
    return 0


def get_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import backend as secrets_backend
    from squall.secrets import connection_store as store
    from squall.secrets.connections import Connection, ConnectionError_

    found = secrets_backend.current().connection_from_env(args.conn_id)
    if found is not None:
        try:
            conn = Connection.parse(args.conn_id, found[1])
        except ConnectionError_ as exc:
            raise CliError(f"{exc} (the environment variable {found[0]})") from None
    else:
        with session_scope(ctx.session_factory()) as session:
            stored = store.read_connection(session, _codec(ctx), args.conn_id)
        if stored is None:
            raise CliError(f"connection {args.conn_id} does not exist")
        conn = stored
    row = _row(conn)
    row["source"] = found[0] if found is not None else "database"
    print_rows([row], [*COLUMNS, "source"], args.output)
    return 0


def _from_args(args: argparse.Namespace) -> Connection:
    from squall.secrets.connections import Connection

    fields = {"conn_type": args.conn_type, "description": args.conn_description,
              "host": args.conn_host, "login": args.conn_login,
              "password": args.conn_password, "schema": args.conn_schema,
              "port": args.conn_port, "extra": args.conn_extra}
    given = [name for name, value in fields.items() if value is not None]
    if args.conn_uri is not None and args.conn_json is not None:
        raise CliError("give --conn-uri or --conn-json, not both")
    if args.conn_uri is not None or args.conn_json is not None:
        if [g for g in given if g != "description"]:
            raise CliError("--conn-uri / --conn-json cannot be combined with --conn-"
                           + ", --conn-".join(g.replace("_", "-") for g in given))
        if args.conn_uri is not None:
            return Connection(conn_id=args.conn_id, uri=args.conn_uri,
                              description=args.conn_description)
        return Connection.from_json(args.conn_json, args.conn_id)
    if args.conn_type is None:
        raise CliError("give --conn-uri, --conn-json or --conn-type (with the other fields)")
    return Connection(conn_id=args.conn_id, **fields)


def add_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.secrets import connection_store as store
    from squall.secrets.connections import ConnectionError_

    try:
        conn = _from_args(args)
        with session_scope(ctx.session_factory()) as session:
            store.add_connection(session, _codec(ctx), conn, overwrite=args.overwrite)
            audit(session, args.conn_id)
    except ConnectionError_ as exc:
        raise CliError(str(exc)) from None
    except IntegrityError:
        raise CliError(f"connection {args.conn_id} was added by someone else meanwhile") \
            from None
    print(f"Successfully added `conn_id`={args.conn_id} : {_masked_uri(conn)}")
    return 0


def _masked_uri(conn: Connection) -> str:
    secrets = SecretsMasker()
    conn.mask_secrets(secrets)
    return secrets.mask(conn.get_uri())


def delete_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import connection_store as store

    with session_scope(ctx.session_factory()) as session:
        existed = store.delete_connection(session, args.conn_id)
        if existed:
            audit(session, args.conn_id, deleted=True)
    if not existed:
        raise CliError(f"connection {args.conn_id} does not exist")
    print(f"Successfully deleted connection with `conn_id`={args.conn_id}")
    return 0


def import_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from squall.common.db import session_scope
    from squall.secrets import connection_store as store
    from squall.secrets.connections import ConnectionError_

    path: Path = args.file
    document = read_json_file(path)
    try:
        with session_scope(ctx.session_factory()) as session:
            ids = store.import_connections(session, _codec(ctx), document,
                                           overwrite=args.overwrite)
            for conn_id in ids:
                audit(session, conn_id)
    except ConnectionError_ as exc:
        raise CliError(f"{path}: {exc}; nothing was imported") from None
    except IntegrityError:
        raise CliError(f"{path}: a connection of it was added by someone else meanwhile; "
                       "nothing was imported, retry") from None
    print(f"Imported {len(ids)} connection(s) from {path}")
    return 0


def export_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import connection_store as store

    with session_scope(ctx.session_factory()) as session:
        document = store.export_connections(session, _codec(ctx))
    write_json_file(args.file, document)
    print(f"Connections successfully exported to {args.file}")
    return 0


def rotate_cmd(ctx: CliContext, args: argparse.Namespace) -> int:
    from squall.common.db import session_scope
    from squall.secrets import backend as secrets_backend
    from squall.secrets.fernet import generate_fernet_key

    if args.generate:
        print(generate_fernet_key())
        return 0
    codec = _codec(ctx)
    if not codec.enabled:
        raise CliError("[core] fernet_key is not set: set it (`squall rotate-fernet-key "
                       "--generate` makes a key) before rotating")
    with session_scope(ctx.session_factory()) as session:
        variables, connections = secrets_backend.rotate_fernet_key(session, codec)
    print(f"Re-encrypted {variables} variable(s) and {connections} connection(s) under the "
          "first key of [core] fernet_key")
    return 0

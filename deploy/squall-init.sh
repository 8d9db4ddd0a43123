#!/usr/bin/env bash
# squall-init: the one-shot set-up of a deployment, run before the other services start
# (docker-compose.yml's squall-init service) and again after every upgrade. Safe to re-run.
#
#   1. squall db migrate: create the schema, or upgrade it to this image's version;
#   2. the admin user SQUALL_ADMIN_USERNAME (default admin) with SQUALL_ADMIN_PASSWORD,
#      created when missing (an existing user, and its password, are left as they are);
#   3. the pools of SQUALL_POOLS_FILE (default /opt/squall/config/pools.json; Airflow's
#      format, `squall pools import`), when the file exists.
set -euo pipefail

log() { printf 'squall-init: %s\n' "$*" >&2; }

username="${SQUALL_ADMIN_USERNAME:-admin}"
pools_file="${SQUALL_POOLS_FILE:-/opt/squall/config/pools.json}"

log "migrating the metadata database"
squall db migrate

if [ -n "$username" ]; then
    users="$(squall users list -o json)"
    if printf '%s' "$users" |
        python3 -c 'import json, sys; sys.exit(0 if any(u["username"] == sys.argv[1] for u in json.load(sys.stdin)) else 1)' "$username"; then
        log "user $username exists; left as it is"
    elif [ -z "${SQUALL_ADMIN_PASSWORD:-}" ]; then
        log "SQUALL_ADMIN_PASSWORD is not set: cannot create the user $username"
        exit 1
    else
        log "creating the admin user $username"
        # on standard input, not the command line, where any process of the host sees it
        printf '%s\n' "$SQUALL_ADMIN_PASSWORD" |
            squall users create --username "$username" --role admin --password-stdin
    fi
fi

if [ -f "$pools_file" ]; then
    log "importing the pools of $pools_file"
    squall pools import "$pools_file"
else
    log "no pools file at $pools_file; pools left as they are"
fi
log "done"

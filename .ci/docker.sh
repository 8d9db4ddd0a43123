#!/usr/bin/env bash
# Docker for the container tests (tests/compose, marker compose): installs Debian's docker.io,
# docker-compose and debootstrap when missing (as root), and starts dockerd when `docker info`
# cannot reach a daemon. Called by .ci/run; can be run on its own.
#
# Environment: DOCKER_WAIT_SECONDS (default 60), DOCKERD_LOG (default /var/log/dockerd-ci.log).
set -euo pipefail

DOCKER_WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-60}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd-ci.log}"
PACKAGES=(docker.io docker-compose debootstrap)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
command -v docker >/dev/null || missing+=(docker)
command -v dockerd >/dev/null || missing+=(dockerd)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -ne 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${PACKAGES[@]}"
    else
        cat >&2 <<MSG
ERROR: the container tests need Docker, docker-compose and debootstrap; missing: ${missing[*]}
Install them (as root):   apt-get update && apt-get install -y ${PACKAGES[*]}
MSG
        exit 1
    fi
else
    echo "docker, dockerd, docker-compose and debootstrap are installed"
fi

if docker info >/dev/null 2>&1; then
    echo "the Docker daemon is up"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || die "the Docker daemon is not running and starting it needs root: sudo dockerd"
log "starting dockerd (log: $DOCKERD_LOG)"
mkdir -p "$(dirname "$DOCKERD_LOG")"
# setsid: the daemon outlives this script and its process group
setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
deadline=$((SECONDS + DOCKER_WAIT_SECONDS))
until docker info >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        die "dockerd did not answer within ${DOCKER_WAIT_SECONDS}s (log: $DOCKERD_LOG)"
    fi
    sleep 1
done
echo "the Docker daemon is up"

#!/usr/bin/env bash
# A private, throw-away PostgreSQL cluster for the side-by-side comparison
# (scripts/compare.sh): installed from Debian's packages when missing, listening on
# loopback only, on a non-default port, in its own data directory.
#
#   scripts/pg-baseline.sh start   # install if needed, initdb, start; prints the conninfo
#   scripts/pg-baseline.sh conninfo
#   scripts/pg-baseline.sh stop    # stop and delete the data directory
#
# Environment: PGB_DIR (default /tmp/delegraph-pg), PGB_PORT (default 54329).
set -euo pipefail

PGB_DIR=${PGB_DIR:-/tmp/delegraph-pg}
PGB_PORT=${PGB_PORT:-54329}
PGB_USER=delegraph
DATA="$PGB_DIR/data"
LOG="$PGB_DIR/server.log"

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

install_pg() {
    if [[ -n "$(pg_bindir)" ]]; then
        return
    fi
    echo "pg-baseline: installing PostgreSQL from Debian's packages" >&2
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
    # Debian starts its own cluster on 5432; this script never uses it.
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when we are root
# (PostgreSQL refuses to run as root).
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PGB_DIR" --shell /bin/sh postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

conninfo() {
    echo "host=127.0.0.1 port=$PGB_PORT user=$PGB_USER dbname=postgres"
}

start() {
    install_pg
    local bin
    bin=$(pg_bindir)
    if [[ -z "$bin" ]]; then
        echo "pg-baseline: no PostgreSQL binaries found after install" >&2
        exit 1
    fi
    if [[ -f "$DATA/postmaster.pid" ]]; then
        echo "pg-baseline: a cluster is already running in $DATA; stopping it first" >&2
        stop
    fi
    rm -rf "$PGB_DIR"
    mkdir -p "$PGB_DIR"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PGB_DIR" --shell /bin/sh postgres
        chown postgres "$PGB_DIR"
    fi
    as_owner "$bin/initdb" -D "$DATA" --username="$PGB_USER" --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$PGB_DIR/initdb.log" 2>&1 \
        || { cat "$PGB_DIR/initdb.log" >&2; exit 1; }
    # Loopback only; tuned like a small OLTP box. fsync is off because the data is
    # throw-away and only the load (not the timed reads) writes.
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGB_PORT
unix_socket_directories = '$PGB_DIR'
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
effective_cache_size = 2GB
random_page_cost = 1.1
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
jit = off
CONF
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >&2
    echo "pg-baseline: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGB_PORT (data $DATA)" >&2
    conninfo
}

stop() {
    local bin
    bin=$(pg_bindir)
    if [[ -n "$bin" && -f "$DATA/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
    fi
    rm -rf "$PGB_DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    conninfo) conninfo ;;
    *)
        echo "usage: $0 start|stop|conninfo" >&2
        exit 2
        ;;
esac

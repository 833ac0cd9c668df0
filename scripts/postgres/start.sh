#!/usr/bin/env bash
# Bring up a private PostgreSQL cluster for an MLflow tracking server (launch.py tracking-server, tests).
#
#   scripts/postgres/start.sh DATA_DIR     # idempotent: installs what is missing, starts what is down
#   scripts/postgres/stop.sh DATA_DIR      # `pg_ctl stop` (the data is kept)
#
# Debian's PostgreSQL (`postgresql`, installed with --no-install-recommends only when missing). Layout:
# DATA_DIR/cluster (initdb, owned by user `postgres`: the server refuses to run as root), DATA_DIR/run
# (its socket), DATA_DIR/postgres.log, DATA_DIR/pgpass (the role's generated password, mode 600, in
# libpq's passfile format: point PGPASSFILE at it). The server listens on 127.0.0.1 only, on its own
# port; a database and a role (password auth, scram) are created for MLflow.
#
# Environment:
#   PG_PORT     port on 127.0.0.1 (default 5433; the port of a running cluster wins)
#   PG_DB       database name (default mlflow)
#   PG_USER     role name (default mlflow)
#   PG_TIMEOUT  seconds to wait for the server (default 60)
#
# Prints one line `postgres ready: postgresql://USER@127.0.0.1:PORT/DB passfile=DATA_DIR/pgpass` (no
# password in it). Exit codes: 0 ready, 2 bad input, 3 cannot run here (not root, no apt-get),
# anything else: failure (log tail on stderr).
set -euo pipefail

log() { echo "start.sh: $*" >&2; }
unavailable() { echo "postgres unavailable: $*" >&2; exit 3; }

[ $# -eq 1 ] || { echo "usage: scripts/postgres/start.sh DATA_DIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || unavailable "scripts/postgres/start.sh must run as root (uid $(id -u))"
PORT=${PG_PORT:-5433}
DB=${PG_DB:-mlflow}
ROLE=${PG_USER:-mlflow}
TIMEOUT=${PG_TIMEOUT:-60}
case "$PORT" in ''|*[!0-9]*) echo "PG_PORT must be a port number, got '$PORT'" >&2; exit 2;; esac
for v in "$DB" "$ROLE"; do
    case "$v" in ''|*[!a-z0-9_]*) echo "PG_DB and PG_USER must be lowercase letters, digits and _, got '$v'" >&2
                                  exit 2;; esac
done

DATA=$(mkdir -p "$1" && cd "$1" && pwd)
CLUSTER=$DATA/cluster
RUN=$DATA/run
LOG=$DATA/postgres.log
PASSFILE=$DATA/pgpass

# ---------------------------------------------------------------- one start.sh per data dir
exec 9>"$DATA/start.lock"
flock -w 300 9 || { log "another start.sh holds $DATA/start.lock"; exit 1; }

# ---------------------------------------------------------------- packages
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
    command -v apt-get >/dev/null 2>&1 || unavailable "PostgreSQL missing and no apt-get"
    log "installing postgresql (apt-get, --no-install-recommends)"
    # keep the package's init script from starting the system cluster on 5432: we run our own
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        trap 'if [ $made_policy = 1 ]; then rm -f "$policy"; fi' EXIT
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=300 postgresql > "/tmp/slm-pg-apt.$$.log" 2>&1
    }
    apt_install || { apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true; apt_install; } || {
        tail -n 30 "/tmp/slm-pg-apt.$$.log" >&2; log "apt-get install postgresql failed"; exit 1; }
    rm -f "/tmp/slm-pg-apt.$$.log"
    if [ $made_policy = 1 ]; then rm -f "$policy"; made_policy=0; fi
fi
BIN=$(bindir)
id postgres >/dev/null 2>&1 || unavailable "no user postgres (the PostgreSQL package makes it)"
as_pg() { runuser -u postgres -- "$@"; }

# the server runs as postgres: it must reach the data dir (a private /root or pytest folder it cannot)
chown postgres: "$DATA"
as_pg test -w "$DATA" || { echo "postgres data dir $DATA: user postgres cannot write it (a parent folder" \
                                "is private?); give a folder it can reach" >&2; exit 2; }
mkdir -p "$RUN"; chown postgres: "$RUN"
touch "$LOG"; chown postgres: "$LOG"

# ---------------------------------------------------------------- cluster
if [ ! -s "$CLUSTER/PG_VERSION" ]; then
    rm -rf "$CLUSTER"; mkdir -p "$CLUSTER"; chown postgres: "$CLUSTER"; chmod 700 "$CLUSTER"
    as_pg "$BIN/initdb" -D "$CLUSTER" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 \
        --locale=C.UTF-8 >> "$LOG" 2>&1 || as_pg "$BIN/initdb" -D "$CLUSTER" -U postgres \
        --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C >> "$LOG" 2>&1 \
        || { tail -n 20 "$LOG" >&2; log "initdb failed"; exit 1; }
    cat >> "$CLUSTER/postgresql.conf" <<CONF
# slm-scaling: a private cluster for MLflow
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 300
shared_buffers = 128MB
fsync = on
CONF
fi
PORT=$(sed -n "s/^port = \([0-9]*\)$/\1/p" "$CLUSTER/postgresql.conf" | tail -n 1)

if ! as_pg "$BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1; then
    # 9>&-: the server must not inherit (and hold forever) this script's lock
    as_pg "$BIN/pg_ctl" -D "$CLUSTER" -l "$LOG" -w -t "$TIMEOUT" start >/dev/null 9>&- \
        || { tail -n 20 "$LOG" >&2; log "pg_ctl start failed (port $PORT in use?)"; exit 1; }
fi

# ---------------------------------------------------------------- role, database, password file
psql_pg() { as_pg "$BIN/psql" -h "$RUN" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ ! -s "$PASSFILE" ]; then
    umask 077
    PASSWORD=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "127.0.0.1:$PORT:$DB:$ROLE:$PASSWORD" > "$PASSFILE.tmp"
    mv "$PASSFILE.tmp" "$PASSFILE"
fi
chmod 600 "$PASSFILE"
PASSWORD=$(cut -d: -f5 "$PASSFILE")
if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql_pg -c "CREATE ROLE $ROLE LOGIN" >/dev/null
fi
# the password goes over stdin, never onto a command line
echo "ALTER ROLE $ROLE PASSWORD '$PASSWORD';" | psql_pg >/dev/null
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_pg -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null
fi
echo "postgres ready: postgresql://$ROLE@127.0.0.1:$PORT/$DB passfile=$PASSFILE"

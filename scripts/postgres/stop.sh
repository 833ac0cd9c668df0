#!/usr/bin/env bash
# Stop the private PostgreSQL cluster that scripts/postgres/start.sh DATA_DIR started (data kept).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/postgres/stop.sh DATA_DIR" >&2; exit 2; }
CLUSTER=$(cd "$1" && pwd)/cluster
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -s "$CLUSTER/PG_VERSION" ] || { echo "no PostgreSQL cluster in $1" >&2; exit 0; }
if runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1; then
    runuser -u postgres -- "$BIN/pg_ctl" -D "$CLUSTER" -m fast -w -t 60 stop >/dev/null
fi
echo "postgres stopped: $CLUSTER"

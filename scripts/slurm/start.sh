#!/usr/bin/env bash
# Bring up a real single-node Slurm (with accounting) on this machine, for tests and local runs.
#
#   sudo scripts/slurm/start.sh      # idempotent: installs what is missing, starts what is down
#   scripts/slurm/stop.sh            # stops the daemons again (packages and state are kept)
#
# Debian 12 packages: slurmctld slurmd slurm-client munge slurmdbd mariadb-server (installed with
# --no-install-recommends only when missing). Daemons: munged, a private MariaDB (own datadir and
# port on 127.0.0.1), slurmdbd, slurmctld, slurmd, all started without systemd, logging under
# $SLURM_TEST_STATE/log. One partition `debug` with this machine as its only node; CPUs and memory
# come from `slurmd -C`, so several 1-CPU jobs run at once.
#
# Environment:
#   SLURM_TEST_STATE           state dir (default /var/lib/slm-scaling-slurm)
#   SLURM_TEST_MAX_ARRAY_SIZE  slurm.conf MaxArraySize (default 1001); a change restarts slurmctld
#   SLURM_TEST_DB_PORT         port of the private MariaDB on 127.0.0.1 (default 3366)
#   SLURM_TEST_TIMEOUT         seconds to wait for each daemon / the idle node (default 60)
#
# Exit codes: 0 ready (prints one line `slurm ready: ...`), 3 cannot run here (not root, or packages
# missing and no apt-get; reason on stderr), anything else: failure (log tails on stderr).
set -euo pipefail

log() { echo "start.sh: $*" >&2; }
unavailable() { echo "slurm unavailable: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || unavailable "scripts/slurm/start.sh must run as root (uid $(id -u))"
command -v dpkg >/dev/null 2>&1 || unavailable "no dpkg: not a Debian-like system"

STATE=${SLURM_TEST_STATE:-/var/lib/slm-scaling-slurm}
MAX_ARRAY=${SLURM_TEST_MAX_ARRAY_SIZE:-1001}
DB_PORT=${SLURM_TEST_DB_PORT:-3366}
TIMEOUT=${SLURM_TEST_TIMEOUT:-60}
CLUSTER=slmtest
ACCOUNT=slmtest
PARTITION=debug
MAX_JOB_COUNT=100000
case "$MAX_ARRAY" in ''|*[!0-9]*) echo "SLURM_TEST_MAX_ARRAY_SIZE must be a positive integer" >&2; exit 2;; esac
[ "$MAX_ARRAY" -ge 1 ] || { echo "SLURM_TEST_MAX_ARRAY_SIZE must be >= 1" >&2; exit 2; }

PKGS=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

# ---------------------------------------------------------------- layout, lock (one start.sh at a time, apt-get included)
mkdir -p "$STATE"/{log,run,slurmctld,slurmd}
chmod 755 "$STATE" "$STATE/log" "$STATE/run"
exec 9>"$STATE/start.lock"
flock -w 300 9 || { echo "start.sh: another start.sh holds $STATE/start.lock" >&2; exit 1; }

# ---------------------------------------------------------------- packages
missing=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || unavailable "packages missing (${missing[*]}) and no apt-get"
    log "installing ${missing[*]} (apt-get, --no-install-recommends)"
    # Keep the packages' init scripts from starting system daemons (the default MariaDB on 3306, ...):
    # we start our own below. Only when no policy-rc.d exists, and removed again afterwards.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        trap 'if [ $made_policy = 1 ]; then rm -f "$policy"; fi' EXIT
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=300 "${missing[@]}" > "/tmp/slm-slurm-apt.$$.log" 2>&1
    }
    need_update=0
    for p in "${missing[@]}"; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]' || need_update=1
    done
    rc=0
    if [ $need_update = 1 ]; then apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true; fi
    apt_install || {
        apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
        apt_install || rc=$?
    }
    if [ $made_policy = 1 ]; then rm -f "$policy"; made_policy=0; fi
    if [ $rc != 0 ]; then
        tail -n 30 "/tmp/slm-slurm-apt.$$.log" >&2
        echo "start.sh: apt-get install ${missing[*]} failed (rc $rc)" >&2
        exit 1
    fi
    rm -f "/tmp/slm-slurm-apt.$$.log"
fi

LOGS="$STATE/log"
RUN="$STATE/run"
DB_DIR="$STATE/mysql"
DB_RUN="$STATE/mysql-run"
DB_CNF="$STATE/mariadb.cnf"
DB_SOCK="$DB_RUN/mysqld.sock"

dump_logs() {
    echo "----- daemon log tails ($LOGS) -----" >&2
    for f in "$LOGS"/*; do
        [ -s "$f" ] || continue
        echo "== $f" >&2
        tail -n 15 "$f" >&2
    done
}
die() { log "$*"; dump_logs; exit 1; }

# pid_alive NAME PIDFILE: the pid in PIDFILE is a live (not zombie) process whose comm is NAME
pid_alive() {
    local pid st comm state
    pid=$(cat "$2" 2>/dev/null) || return 1
    case "$pid" in ''|*[!0-9]*) return 1;; esac
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    comm=${st#*(}; comm=${comm%%)*}
    state=${st##*) }; state=${state%% *}
    [ "$comm" = "${1:0:15}" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# the pid in PIDFILE is live, whatever its name: for a daemon just launched, which may still be
# `setsid`/`setpriv` for a moment before they exec it
pid_running() {
    local pid st state
    pid=$(cat "$1" 2>/dev/null) || return 1
    case "$pid" in ''|*[!0-9]*) return 1;; esac
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${st##*) }; state=${state%% *}
    [ "$state" != Z ] && [ "$state" != X ]
}

# any live process named NAME, other than a zombie
live_pids() {
    local pid st state
    for pid in $(pgrep -x "$1" 2>/dev/null); do
        st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        state=${st##*) }; state=${state%% *}
        [ "$state" = Z ] || [ "$state" = X ] || echo "$pid"
    done
}

stop_pidfile() {   # NAME PIDFILE
    pid_alive "$1" "$2" || return 0
    local pid; pid=$(cat "$2")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive "$1" "$2" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do pid_alive "$1" "$2" || return 0; sleep 0.1; done
    die "could not stop $1 (pid $pid)"
}

# launch NAME LOGFILE CMD...: run CMD in its own session, detached from our stdio and lock fd;
# records its pid in $RUN/NAME.pid (setsid execs in place, so $! is the daemon itself).
launch() {
    local name=$1 out=$2; shift 2
    echo "=== $(date '+%F %T') starting: $*" >> "$out"
    setsid "$@" < /dev/null >> "$out" 2>&1 9>&- &
    echo $! > "$RUN/$name.pid"
}

wait_for() {   # DESCRIPTION NAME CHECK-CMD...   (NAME: daemon that must stay alive meanwhile)
    local what=$1 name=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [ -n "$name" ] && ! pid_running "$RUN/$name.pid"; then
            die "$name exited while waiting for $what"
        fi
        sleep 0.2
    done
    die "timed out after ${TIMEOUT}s waiting for $what"
}

refuse_foreign() {   # NAME: a live NAME not started from this state dir would clash on ports/config
    local p
    pid_alive "$1" "$RUN/$1.pid" && return 0
    p=$(live_pids "$1" | head -n 1)
    [ -z "$p" ] || die "$1 already runs (pid $p) but was not started from $STATE; stop it (or run stop.sh with the SLURM_TEST_STATE that started it)"
}

# Slurm daemons started from another state dir would clash (ports, /etc/slurm): refuse before
# touching any config.
for d in slurmdbd slurmctld slurmd; do refuse_foreign "$d"; done

# ---------------------------------------------------------------- hardware, configs
HOST=$(hostname -s)
hw=$(slurmd -C 2>/dev/null | head -n 1) || true
hwval() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
CPUS=$(hwval CPUs); BOARDS=$(hwval Boards); SOCKETS=$(hwval SocketsPerBoard)
CORES=$(hwval CoresPerSocket); THREADS=$(hwval ThreadsPerCore); HWMEM=$(hwval RealMemory)
[ -n "$CPUS" ] || CPUS=$(nproc)
if [ -z "$SOCKETS" ] || [ -z "$CORES" ] || [ -z "$THREADS" ]; then
    BOARDS=1; SOCKETS=1; CORES=$CPUS; THREADS=1
fi
[ -n "$HWMEM" ] || HWMEM=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# RealMemory above what slurmd measures drains the node: leave 5% (at least 256 MB) aside.
margin=$(( HWMEM / 20 )); [ $margin -ge 256 ] || margin=256
MEM=$(( HWMEM - margin ))
# Allocate by core where a core is one CPU (as measured on these machines); with hyper-threads,
# allocate by hardware thread so that a 1-CPU job does not take a whole core.
if [ "$THREADS" = 1 ]; then SELECT_PARAMS=CR_Core_Memory; else SELECT_PARAMS=CR_CPU_Memory; fi

mkdir -p /etc/slurm
new_conf=$(mktemp)
cat > "$new_conf" <<EOF
# Written by scripts/slurm/start.sh (slm-scaling test cluster); rewritten on every start.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=5
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=$SELECT_PARAMS
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=2
ReturnToService=2
KillWait=5
InactiveLimit=0
MailProg=/bin/true
MinJobAge=120
SlurmctldTimeout=120
SlurmdTimeout=300
MaxJobCount=$MAX_JOB_COUNT
MaxArraySize=$MAX_ARRAY
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurm_conf_changed=0
if ! cmp -s "$new_conf" /etc/slurm/slurm.conf; then
    install -m 644 "$new_conf" /etc/slurm/slurm.conf
    slurm_conf_changed=1
fi
rm -f "$new_conf"

if [ ! -s "$STATE/db.pass" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$STATE/db.pass")
fi
DB_PASS=$(cat "$STATE/db.pass")
new_dbd=$(mktemp)
cat > "$new_dbd" <<EOF
# Written by scripts/slurm/start.sh (slm-scaling test cluster).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.daemon.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
dbd_conf_changed=0
if ! cmp -s "$new_dbd" /etc/slurm/slurmdbd.conf; then
    install -m 600 -o root -g root "$new_dbd" /etc/slurm/slurmdbd.conf
    dbd_conf_changed=1
fi
chmod 600 /etc/slurm/slurmdbd.conf
rm -f "$new_dbd"

cat > "$DB_CNF.tmp" <<EOF
[mysqld]
user=mysql
datadir=$DB_DIR
socket=$DB_SOCK
pid-file=$DB_RUN/mysqld.pid
port=$DB_PORT
bind-address=127.0.0.1
log-error=$LOGS/mariadb.log
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
# a disposable test database: trade durability for speed (table creation on first start)
innodb_flush_log_at_trx_commit=2
innodb_doublewrite=0
max_connections=50
[client]
socket=$DB_SOCK
user=root
EOF
mv "$DB_CNF.tmp" "$DB_CNF"

# ---------------------------------------------------------------- munged
start_munge() {
    local ok=0
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && ok=1
    [ $ok = 1 ] && return 0          # a working munged (ours or the system's) is all we need
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        fi
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    # A stale munged (e.g. a zombie's pid file) must not block a new one.
    for p in $(live_pids munged); do kill -TERM "$p" 2>/dev/null || true; done
    rm -rf /run/munge
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    launch munged "$LOGS/munged.out" setpriv --reuid=munge --regid=munge --init-groups \
        /usr/sbin/munged --foreground
    wait_for "munged to answer" munged sh -c 'munge -n </dev/null | unmunge'
}

# ---------------------------------------------------------------- MariaDB
db_ping() { mariadb-admin --defaults-file="$DB_CNF" ping; }
start_mariadb() {
    mkdir -p "$DB_RUN"; chown mysql:mysql "$DB_RUN"; chmod 755 "$DB_RUN"
    touch "$LOGS/mariadb.log"; chown mysql:mysql "$LOGS/mariadb.log"
    if [ ! -d "$DB_DIR/mysql" ]; then
        log "initialising MariaDB datadir $DB_DIR"
        rm -rf "$DB_DIR"; mkdir -p "$DB_DIR"; chown mysql:mysql "$DB_DIR"; chmod 750 "$DB_DIR"
        mariadb-install-db --defaults-file="$DB_CNF" --skip-test-db \
            --auth-root-authentication-method=socket > "$LOGS/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $LOGS/mariadb-install.log)"
        rm -f "$STATE/db.users"
    fi
    chown -R mysql:mysql "$DB_DIR"
    if ! pid_alive mariadbd "$RUN/mariadbd.pid"; then
        launch mariadbd "$LOGS/mariadbd.out" /usr/sbin/mariadbd --defaults-file="$DB_CNF"
    fi
    wait_for "MariaDB on $DB_SOCK" mariadbd db_ping
    if [ ! -f "$STATE/db.users" ] || [ "$(cat "$STATE/db.users")" != "$DB_PASS" ]; then
        mariadb --defaults-file="$DB_CNF" <<EOF || die "creating the slurm database user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
        (umask 077; echo "$DB_PASS" > "$STATE/db.users")
    fi
}

# ---------------------------------------------------------------- checks used while waiting
dbd_up() { timeout 10 sacctmgr -n -P list cluster format=cluster; }
ctld_up() { timeout 10 scontrol ping | grep -q 'is UP'; }
node_state() { timeout 10 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1; }
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing) return 0;; esac; return 1; }
registered() {   # slurmctld has registered with slurmdbd (else jobs are not in sacct)
    [ -n "$(timeout 10 sacctmgr -n -P list cluster "$CLUSTER" format=controlhost 2>/dev/null)" ]
}
# slurmd (re)started at/after epoch $slurmd_since has registered: a node whose slurmd just died
# still shows idle until SlurmdTimeout, so `idle` alone proves nothing after a restart.
slurmd_registered() {
    local t
    [ "$slurmd_since" = 0 ] && return 0
    t=$(timeout 10 scontrol show node "$HOST" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s 2>/dev/null || echo 0)" -ge "$slurmd_since" ]
}
sacct_ok() { timeout 10 sacct -n -X -S now -o JobID >/dev/null; }

# ---------------------------------------------------------------- start everything
t0=$SECONDS

start_munge
start_mariadb

if [ $dbd_conf_changed = 1 ]; then stop_pidfile slurmdbd "$RUN/slurmdbd.pid"; fi
if ! pid_alive slurmdbd "$RUN/slurmdbd.pid"; then
    launch slurmdbd "$LOGS/slurmdbd.out" /usr/sbin/slurmdbd -D
fi
wait_for "slurmdbd to answer sacctmgr" slurmdbd dbd_up

if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
fi
if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account 2>/dev/null)" ]; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="slm-scaling tests" \
        Organization=slm-scaling >/dev/null || die "sacctmgr add account failed"
fi
if [ -z "$(sacctmgr -n -P list assoc users=root accounts="$ACCOUNT" format=user 2>/dev/null)" ]; then
    sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null \
        || die "sacctmgr add user failed"
fi

# MaxArraySize (and most of slurm.conf) needs a slurmctld restart; the job state is kept.
if pid_alive slurmctld "$RUN/slurmctld.pid"; then
    running_max=$(timeout 10 scontrol show config 2>/dev/null | sed -n 's/^MaxArraySize *= *//p')
    if [ $slurm_conf_changed = 1 ] || [ "$running_max" != "$MAX_ARRAY" ]; then
        log "applying slurm.conf (MaxArraySize ${running_max:-?} -> $MAX_ARRAY): restarting slurmctld and slurmd"
        stop_pidfile slurmctld "$RUN/slurmctld.pid"
        stop_pidfile slurmd "$RUN/slurmd.pid"
    fi
elif [ $slurm_conf_changed = 1 ]; then
    stop_pidfile slurmd "$RUN/slurmd.pid"
fi
if ! pid_alive slurmctld "$RUN/slurmctld.pid"; then
    launch slurmctld "$LOGS/slurmctld.out" /usr/sbin/slurmctld -D
fi
wait_for "slurmctld to answer scontrol ping" slurmctld ctld_up
slurmd_since=0
if ! pid_alive slurmd "$RUN/slurmd.pid"; then
    slurmd_since=$(( $(date +%s) - 1 ))
    launch slurmd "$LOGS/slurmd.out" /usr/sbin/slurmd -D -N "$HOST"
fi

# The node: idle (or busy with earlier jobs); resume it once if an old run left it down/drained.
deadline=$((SECONDS + TIMEOUT)); resumed=0
while ! { slurmd_registered && node_ready; }; do
    pid_running "$RUN/slurmd.pid" || die "slurmd exited"
    pid_running "$RUN/slurmctld.pid" || die "slurmctld exited"
    st=$(node_state)
    case "$st" in
        down|drained|draining|drain|fail|failing)
            reason=$(timeout 10 sinfo -h -N -n "$HOST" -o %E 2>/dev/null | head -n 1)
            # drained by stop.sh: resume at once; otherwise give ReturnToService a few seconds
            if [ $resumed = 0 ] && { [ "$reason" = "slm-scaling stop.sh" ] ||
                                     [ $((SECONDS + TIMEOUT - deadline)) -ge 3 ]; }; then
                log "node $HOST is $st (${reason:-no reason}): resuming it"
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi;;
    esac
    [ $SECONDS -lt $deadline ] || die "node $HOST not idle after ${TIMEOUT}s (state: ${st:-none}; $(sinfo -h -N -n "$HOST" -o '%T %E' 2>/dev/null))"
    sleep 0.2
done
wait_for "slurmctld to register with slurmdbd" slurmctld registered
wait_for "sacct to answer" slurmdbd sacct_ok

cpus=$(sinfo -h -N -n "$HOST" -o %c | head -n 1)
mem=$(sinfo -h -N -n "$HOST" -o %m | head -n 1)
max=$(scontrol show config | sed -n 's/^MaxArraySize *= *//p')
[ "$max" = "$MAX_ARRAY" ] || die "slurmctld reports MaxArraySize=$max, wanted $MAX_ARRAY"
log "up in $((SECONDS - t0)) s (state $STATE)"
echo "slurm ready: partition $PARTITION, cpus $cpus, mem $mem MB, MaxArraySize $max"

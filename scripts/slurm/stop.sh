#!/usr/bin/env bash
# Stop the daemons that scripts/slurm/start.sh started: slurmd (and the job steps it left running),
# slurmctld, slurmdbd, the private MariaDB, munged. Packages, configs and state stay, so the next
# start.sh is a quick restart (queued jobs are kept in the slurmctld state).
#
#   scripts/slurm/stop.sh            # stop
#   scripts/slurm/stop.sh --purge    # stop, then delete the state dir (accounting DB, job state, logs)
#
# Environment: SLURM_TEST_STATE (default /var/lib/slm-scaling-slurm), as for start.sh.
set -uo pipefail

STATE=${SLURM_TEST_STATE:-/var/lib/slm-scaling-slurm}
RUN="$STATE/run"
purge=0
case "${1:-}" in
    --purge) purge=1;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2;;
esac
[ "$(id -u)" = 0 ] || { echo "stop.sh: must run as root" >&2; exit 3; }

pid_alive_pid() {   # NAME PID
    local st comm state
    st=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
    comm=${st#*(}; comm=${comm%%)*}
    state=${st##*) }; state=${state%% *}
    [ "$comm" = "${1:0:15}" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop_pid() {   # NAME PID: TERM, wait up to 10 s, then KILL
    local name=$1 pid=$2
    pid_alive_pid "$name" "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pid_alive_pid "$name" "$pid" || { echo "stopped $name ($pid)"; return 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do pid_alive_pid "$name" "$pid" || { echo "killed $name ($pid)"; return 0; }; sleep 0.1; done
    echo "stop.sh: $name ($pid) is still alive" >&2
    return 1
}

stop_name() {   # NAME: the pid start.sh recorded, plus any other live process with exactly that name
    local name=$1 pid r=0
    pid=$(cat "$RUN/$name.pid" 2>/dev/null)
    if [ -n "$pid" ]; then stop_pid "$name" "$pid" || r=1; fi
    for pid in $(pgrep -x "$name" 2>/dev/null); do stop_pid "$name" "$pid" || r=1; done
    rm -f "$RUN/$name.pid"
    return $r
}

descendants() {   # PID: all descendants of PID (children first listed after their parent)
    local kids k
    kids=$(pgrep -P "$1" 2>/dev/null)
    for k in $kids; do echo "$k"; descendants "$k"; done
}

# Running jobs would leave their processes behind (slurmstepd does not outlive slurmd cleanly):
# cancel them while slurmctld still answers, and give them KillWait. Pending jobs stay queued; the
# node is drained first so that none of them starts meanwhile (start.sh resumes it).
if timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    scontrol update NodeName="$(hostname -s)" State=DRAIN Reason="slm-scaling stop.sh" 2>/dev/null || true
    if [ -n "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ]; then
        echo "cancelling running jobs: $(squeue -h -t RUNNING -o %i | tr '\n' ' ')"
        scancel --state=RUNNING 2>/dev/null || true
        for _ in $(seq 1 150); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

rc=0
stop_name slurmd || rc=1
# job steps still left (and the job processes under them)
for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    for d in $(descendants "$pid"); do kill -KILL "$d" 2>/dev/null || true; done
done
stop_name slurmstepd || rc=1
stop_name slurmctld || rc=1
stop_name slurmdbd || rc=1
# only our MariaDB (by pid file): a system MariaDB, if any, is not ours to stop
pid=$(cat "$RUN/mariadbd.pid" 2>/dev/null)
if [ -n "$pid" ]; then stop_pid mariadbd "$pid" || rc=1; fi
rm -f "$RUN/mariadbd.pid"
pid=$(cat "$RUN/munged.pid" 2>/dev/null)
if [ -n "$pid" ]; then stop_pid munged "$pid" || rc=1; fi
rm -f "$RUN/munged.pid"

if [ $purge = 1 ] && [ $rc = 0 ]; then
    case "$STATE" in /|/var|/var/lib|"") echo "stop.sh: refusing to purge $STATE" >&2; exit 1;; esac
    rm -rf "$STATE"
    echo "purged $STATE"
fi
exit $rc

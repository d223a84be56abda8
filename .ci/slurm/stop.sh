#!/usr/bin/env bash
# Stop ccdask's single-node CI SLURM: cancel its jobs, then stop slurmd, slurmctld and (if
# start.sh started it) munged, each by the PID in its pid file. Never by name (no pkill/killall).
#
# Safe to run when SLURM is not running. Refuses to act on a SLURM that is not ccdask's CI one.
# Exits non-zero when a daemon cannot be stopped.
set -uo pipefail
CONF=/etc/slurm/slurm.conf
PARTITION=debug
status=0

say() { echo "ccdask slurm stop: $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ -f "$CONF" ] && ! grep -q '^ClusterName=ccdaskci$' "$CONF"; then
    echo "ccdask slurm stop: FAILED: $CONF is not ccdask's CI configuration; not touching that SLURM" >&2
    exit 1
fi

# Cancel jobs first so no job step (and no dask worker inside it) outlives the daemons.
if alive /run/slurm/slurmctld.pid; then
    if [ -n "$(squeue -h -p "$PARTITION" -o %i 2>/dev/null)" ]; then
        say "cancelling jobs: $(squeue -h -p "$PARTITION" -o %i | tr '\n' ' ')"
        scancel -p "$PARTITION" || true
        for _ in $(seq 1 50); do
            [ -z "$(squeue -h -p "$PARTITION" -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
        left=$(squeue -h -p "$PARTITION" -o '%i %T' 2>/dev/null)
        [ -z "$left" ] || say "jobs still listed after 10 s (stopping anyway): $left"
    fi
fi

# stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL.
stop_pid() {
    local name=$1 pidfile=$2 pid
    if [ ! -s "$pidfile" ]; then say "$name: not running (no $pidfile)"; return 0; fi
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        say "$name: not running (stale pid $pid)"; rm -f "$pidfile"; return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored TERM for 10 s; sending KILL"
        kill -KILL "$pid"; sleep 0.5
    fi
    if kill -0 "$pid" 2>/dev/null; then
        echo "ccdask slurm stop: FAILED: $name (pid $pid) is still running" >&2; status=1
    else
        say "$name (pid $pid) stopped"; rm -f "$pidfile"
    fi
}

stop_pid slurmd /run/slurm/slurmd.pid
stop_pid slurmctld /run/slurm/slurmctld.pid
if [ -f /run/slurm/ccdask-started-munged ]; then
    stop_pid munged /run/munge/munged.pid
    rm -f /run/slurm/ccdask-started-munged
else
    say "munged: not started by start.sh, left alone"
fi
exit $status

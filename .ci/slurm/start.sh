#!/usr/bin/env bash
# Start ccdask's single-node CI SLURM by hand (no systemd): munged, slurmctld, slurmd.
#
# One node called "localhost" (127.0.0.1) in partition "debug". Idempotent: daemons already
# running are left alone, and the script returns as soon as the node is usable. Fails loudly
# (non-zero exit, the reason and the relevant log lines on stderr) when SLURM cannot start.
# Run as root after .ci/slurm/install.sh.
#
# Environment: CCDASK_SLURM_CPUS (default: nproc), CCDASK_SLURM_MEMORY_MB (default: 80 % of RAM,
# at most 20000), CCDASK_SLURM_TIMEOUT seconds to wait for each daemon (default 30).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=/etc/slurm/slurm.conf
NODE=localhost
PARTITION=debug
TIMEOUT=${CCDASK_SLURM_TIMEOUT:-30}
t_start=$(date +%s.%N)

say() { echo "ccdask slurm start: $*"; }
show_log() { if [ -f "$1" ]; then echo "--- last lines of $1:" >&2; tail -n 25 "$1" >&2; fi; }
die() { echo "ccdask slurm start: FAILED: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# wait_for SECONDS COMMAND...: poll every 0.2 s until COMMAND succeeds; false on timeout.
wait_for() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
munge_ok() { munge -n | unmunge; }
ctld_up() { scontrol ping | grep -q 'is UP'; }
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_usable() { node_state | grep -qE '^(idle|mixed|allocated|completing)$'; }

[ "$(id -u)" = 0 ] || die "must run as root (uid is $(id -u))"
for cmd in munge unmunge sinfo scontrol /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run .ci/slurm/install.sh first"
done
[ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing: run .ci/slurm/install.sh first"
CPUS=${CCDASK_SLURM_CPUS:-$(nproc)}
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
[[ "$mem_kb" =~ ^[0-9]+$ ]] || die "cannot read MemTotal from /proc/meminfo"
mem_mb=$(( mem_kb / 1024 * 8 / 10 ))
MEM_MB=${CCDASK_SLURM_MEMORY_MB:-$(( mem_mb < 20000 ? mem_mb : 20000 ))}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "CCDASK_SLURM_TIMEOUT=$TIMEOUT is not a positive integer"
[[ "$CPUS" =~ ^[1-9][0-9]*$ ]] || die "CCDASK_SLURM_CPUS=$CPUS is not a positive integer"
[[ "$MEM_MB" =~ ^[1-9][0-9]*$ ]] || die "CCDASK_SLURM_MEMORY_MB=$MEM_MB is not a positive integer"

# 1. The configuration, from the template. Never overwrite another cluster's configuration, and
#    never change the configuration under running daemons.
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
wanted=$(mktemp)
trap 'rm -f "$wanted"' EXIT
sed -e "s/@CPUS@/$CPUS/" -e "s/@REAL_MEMORY_MB@/$MEM_MB/" "$HERE/slurm.conf" > "$wanted"
if [ -f "$CONF" ] && ! grep -q '^ClusterName=ccdaskci$' "$CONF"; then
    die "$CONF exists and is not ccdask's CI configuration ($(grep -m1 '^ClusterName' "$CONF" || echo 'no ClusterName')); refusing to overwrite it"
fi
if ! cmp -s "$wanted" "$CONF" 2>/dev/null; then
    if alive /run/slurm/slurmctld.pid || alive /run/slurm/slurmd.pid; then
        die "SLURM is running with a different $CONF (CPUs/memory changed?); run .ci/slurm/stop.sh first"
    fi
    install -m 644 "$wanted" "$CONF"
    say "wrote $CONF (node $NODE: CPUs=$CPUS RealMemory=${MEM_MB}MB, partition $PARTITION)"
fi

# 2. munge: the authentication daemon, run as the munge user.
if munge_ok >/dev/null 2>&1; then
    say "munged already running"
else
    if alive /run/munge/munged.pid; then
        show_log /var/log/munge/munged.log
        die "munged (pid $(cat /run/munge/munged.pid)) is running but 'munge -n | unmunge' fails"
    fi
    chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged || { show_log /var/log/munge/munged.log; die "munged did not start"; }
    touch /run/slurm/ccdask-started-munged
    wait_for "$TIMEOUT" munge_ok || { show_log /var/log/munge/munged.log; die "munged started but credentials do not round-trip (munge -n | unmunge) after ${TIMEOUT}s"; }
    say "munged started (pid $(cat /run/munge/munged.pid))"
fi

# 3. slurmctld, the controller. -c: start from a clean state (no jobs or node states from before).
if alive /run/slurm/slurmctld.pid; then
    say "slurmctld already running (pid $(cat /run/slurm/slurmctld.pid))"
else
    /usr/sbin/slurmctld -c || { show_log /var/log/slurm/slurmctld.log; die "slurmctld did not start"; }
fi
wait_for "$TIMEOUT" ctld_up || { show_log /var/log/slurm/slurmctld.log; die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT}s"; }

# 4. slurmd, the node daemon; -N: take the node name from slurm.conf, not from the host name.
if alive /run/slurm/slurmd.pid; then
    say "slurmd already running (pid $(cat /run/slurm/slurmd.pid))"
else
    /usr/sbin/slurmd -N "$NODE" || { show_log /var/log/slurm/slurmd.log; die "slurmd did not start"; }
fi
# A freshly started slurmd registers within a second or two. A node still down or drained
# after that was left so by an earlier run (or an admin): put it back into service, once.
if ! wait_for 5 node_usable; then
    state=$(node_state)
    if [[ "$state" =~ ^(down|drain|fail) ]]; then
        say "node $NODE is $state (reason: $(sinfo -h -R -n "$NODE" -o %E)); resuming it"
        scontrol update NodeName="$NODE" State=RESUME || true
    fi
    wait_for "$TIMEOUT" node_usable || true
fi
if ! node_usable; then
    sinfo -N -l >&2 || true
    sinfo -R >&2 || true
    show_log /var/log/slurm/slurmctld.log
    show_log /var/log/slurm/slurmd.log
    die "node $NODE is '$(node_state)', not idle, after ${TIMEOUT}s"
fi
[ "$(sinfo -h -p "$PARTITION" -o %a)" = up ] || die "partition $PARTITION is not up: $(sinfo -p "$PARTITION" 2>&1)"

sinfo
say "ready in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s:" \
    "munged=$(cat /run/munge/munged.pid 2>/dev/null || echo '?')" \
    "slurmctld=$(cat /run/slurm/slurmctld.pid) slurmd=$(cat /run/slurm/slurmd.pid)"

#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm) and munge for ccdask's CI. Run as root.
#
# Safe to run again: packages already present are not reinstalled and an existing munge key is
# kept. Exits non-zero with the reason when something cannot be installed.
set -euo pipefail

die() { echo "ccdask slurm install: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get and /etc/munge need it); uid is $(id -u)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu only"

have_all() {
    local cmd
    for cmd in sinfo sbatch squeue scontrol slurmctld slurmd munged munge unmunge; do
        command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || return 1
    done
}

if have_all; then
    echo "ccdask slurm install: slurm-wlm and munge already installed"
else
    export DEBIAN_FRONTEND=noninteractive
    t0=$(date +%s)
    # Try without refreshing the package lists first (fast when they are current).
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >/tmp/ccdask-apt.log 2>&1; then
        echo "ccdask slurm install: apt-get install failed, refreshing package lists and retrying"
        apt-get update -q >>/tmp/ccdask-apt.log 2>&1 || { tail -n 20 /tmp/ccdask-apt.log >&2; die "apt-get update failed (log: /tmp/ccdask-apt.log)"; }
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>/tmp/ccdask-apt.log 2>&1 \
            || { tail -n 20 /tmp/ccdask-apt.log >&2; die "apt-get install slurm-wlm munge failed (log: /tmp/ccdask-apt.log)"; }
    fi
    have_all || die "slurm-wlm/munge installed but some commands are still missing (log: /tmp/ccdask-apt.log)"
    echo "ccdask slurm install: installed slurm-wlm and munge in $(( $(date +%s) - t0 )) s"
fi

# munge needs a key readable only by the munge user; the package usually creates one.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    echo "ccdask slurm install: created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key
echo "ccdask slurm install: ready:" $(dpkg-query -W -f '${Package}=${Version}\n' slurm-wlm slurmctld slurmd munge)

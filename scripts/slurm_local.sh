#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try the SLURM launcher before spending cluster hours.
# Needs root and Debian's or Ubuntu's packages: apt-get install slurmctld slurmd slurm-client munge
#
#   sudo scripts/slurm_local.sh up      # configure and start munge, slurmctld and slurmd; wait for the node
#   sudo scripts/slurm_local.sh down    # stop them
set -euo pipefail

up() {
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))  # MB, leaving 1 GB to the system
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=${host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    [ -s /etc/munge/munge.key ] || mungekey --create --force
    chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
    pgrep -x slurmctld >/dev/null || slurmctld -c  # -c: a clean queue, no jobs left from an earlier run
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 30); do
        if sinfo --noheader --states=idle 2>/dev/null | grep -q idle; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "slurm_local.sh: the node did not come up; see /var/log/slurm/" >&2
    return 1
}

down() {
    scontrol shutdown 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    pkill -x munged 2>/dev/null || true
    for _ in $(seq 20); do  # a quick `up` after `down` must not find them still shutting down
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x munged >/dev/null || return 0
        sleep 0.5
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

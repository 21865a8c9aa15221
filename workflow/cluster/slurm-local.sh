#!/usr/bin/env bash
# A one-node slurm cluster on this machine, for the tests of the slurm profile (tests/test_slurm_e2e.py).
#   workflow/cluster/slurm-local.sh start   # install slurm-wlm + munge if missing (apt, as root), start, wait idle
#   workflow/cluster/slurm-local.sh stop    # stop the daemons and remove this cluster's slurm.conf
# This host is controller and only compute node; cores and memory are read off the machine; processes are
# tracked without systemd or cgroups (proctrack/linuxproc, task/none), so it runs inside containers too.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/tmp/densenas-slurm}
CONF=/etc/slurm/slurm.conf

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm-local: slurm is not installed and cannot be (needs apt-get as root)" >&2
    exit 3
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null \
    || { DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
}

write_config() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p /etc/slurm "$STATE"/{spool,state,log}
  cat > "$CONF" <<EOF
ClusterName=densenas-local
SlurmctldHost=${host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${STATE}/state
SlurmdSpoolDir=${STATE}/spool
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${STATE}/log/jobcomp.log
MpiDefault=none
KillWait=30
# No accounting database here: finished jobs stay visible to squeue (the profile's status command) for an hour.
MinJobAge=3600
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
# The profile's partition names, both on the one node.
PartitionName=gpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=${host} MaxTime=INFINITE State=UP
EOF
}

start() {
  install_packages
  write_config
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  pgrep -x munged >/dev/null || runuser -u munge -- munged 2>/dev/null || munged --force
  pgrep -x slurmctld >/dev/null || slurmctld -c -i
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle'; then
      echo "slurm-local: node $(hostname -s) idle (state in ${STATE})"
      return
    fi
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm-local: the node did not become idle; logs in ${STATE}/log" >&2
  sinfo >&2 || true
  exit 4
}

stop_daemons() {
  for daemon in slurmd slurmctld munged; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 30); do
    running=0
    for daemon in slurmd slurmctld munged; do
      pgrep -x "$daemon" >/dev/null && running=1
    done
    [ "$running" = 0 ] && return 0
    sleep 0.5
  done
  for daemon in slurmd slurmctld munged; do
    pkill -9 -x "$daemon" 2>/dev/null || true
  done
}

stop() {
  stop_daemons
  remove_config
}

# With a slurm.conf but no controller, every slurm client waits ~9 s for it: `scontrol show config`, which the
# Snakemake slurm plugin runs whenever Snakemake starts (even a local run), so each later `snakemake` call in the
# tests would lose 9 s. Only the config this script wrote is removed; `start` writes it again.
remove_config() {
  if [ -f "$CONF" ] && grep -qx 'ClusterName=densenas-local' "$CONF"; then
    rm -f "$CONF"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

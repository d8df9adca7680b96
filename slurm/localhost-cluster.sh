#!/usr/bin/env bash
# A single-node SLURM cluster on localhost (Debian's slurm-wlm + munge), for tests and for trying the
# suite's SLURM path on a workstation. Everything it writes lives under one state folder; the daemons
# are stopped by the PIDs in their pid files. Needs root (the daemons run as root: SlurmUser=root).
#
#   slurm/localhost-cluster.sh start [STATE_DIR]   install if needed, write slurm.conf, start munged,
#                                                  slurmctld and slurmd, wait until the node is idle
#   slurm/localhost-cluster.sh stop  [STATE_DIR]   stop slurmd and slurmctld (munged is left running)
#   slurm/localhost-cluster.sh env   [STATE_DIR]   print `export SLURM_CONF=...` for clients
#
# Two partitions over the one node: debug (the default) and high, whose jobs preempt debug's
# (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE: the preempted job gets its signal, is requeued
# by slurmctld and starts again later): `sbatch -p high -c 2 --wrap "sleep 30"` preempts a running grid.
#
# STATE_DIR defaults to /tmp/npas-slurm. Environment: NPAS_SLURM_MAX_ARRAY (MaxArraySize, default 1001),
# NPAS_SLURM_CPUS (CPUs of the node, default: all). Facts behind the settings: ../shared/notes/machine.md.
set -euo pipefail

cmd=${1:-}
state=${2:-/tmp/npas-slurm}
conf="$state/slurm.conf"

log() { echo "localhost-cluster: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  mkdir -p /run/munge
  chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || { log "no /etc/munge/munge.key (reinstall munge)"; exit 1; }
  su -s /bin/sh munge -c munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  log "munged did not come up"; exit 1
}

write_conf() {
  mkdir -p "$state/spool" "$state/state" "$state/log"
  local cpus=${NPAS_SLURM_CPUS:-$(nproc)}
  local mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat >"$conf" <<EOF
ClusterName=npas-localhost
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldParameters=preempt_send_user_signal
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxArraySize=${NPAS_SLURM_MAX_ARRAY:-1001}
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost NodeHostname=$(hostname -s) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
EOF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "$cmd" in
  start)
    install_packages
    start_munge
    write_conf
    export SLURM_CONF="$conf"
    alive "$state/slurmctld.pid" || slurmctld -i -f "$conf"
    alive "$state/slurmd.pid" || slurmd -f "$conf"
    for _ in $(seq 100); do
      if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        log "up: export SLURM_CONF=$conf"
        exit 0
      fi
      sleep 0.2
    done
    log "the node did not become idle within 20 s; see $state/log/"; sinfo >&2 || true; exit 1
    ;;
  stop)
    # jobs first (a slurmd with running steps outlives its controller and holds the node for the next
    # cluster), then the daemons: TERM, and KILL after 10 s
    if alive "$state/slurmctld.pid"; then
      SLURM_CONF="$conf" scancel --user="$(id -un)" 2>/dev/null || true
      for _ in $(seq 50); do
        [ -z "$(SLURM_CONF="$conf" squeue -h -t RUNNING,COMPLETING 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
    pids=""
    for d in slurmd slurmctld; do
      if alive "$state/$d.pid"; then pids="$pids $(cat "$state/$d.pid")"; kill "$(cat "$state/$d.pid")"; fi
    done
    for _ in $(seq 100); do
      alive=0
      for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && exit 0
      sleep 0.1
    done
    for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
    log "daemons did not stop within 10 s: killed"
    ;;
  env)
    echo "export SLURM_CONF=$conf"
    ;;
  *)
    sed -n '2,16p' "$0" >&2; exit 2
    ;;
esac

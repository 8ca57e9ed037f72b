#!/usr/bin/env bash
# A two-node Slurm cluster on localhost for tests and CI (Debian's slurm-wlm; needs root): one slurmctld and two
# slurmd daemons with distinct node names (nodeA, nodeB: NodeHostname=localhost, own ports, spool, pid and log files),
# so that `srun --nodes=2` starts one task per "node", as on a real multi-node cluster.
#   scripts/slurm_local.sh start [DIR]   install if needed, write DIR/slurm.conf, start munged/slurmctld/2 x slurmd
#   scripts/slurm_local.sh stop  [DIR]   stop the daemons this script started, by pid
# Prints the SLURM_CONF path to use (export SLURM_CONF=... before sbatch/squeue).
set -euo pipefail
cmd=${1:?usage: slurm_local.sh start|stop [DIR]}
D=$(realpath -m "${2:-${RSAM_SLURM_DIR:-/tmp/rsam-slurm}}")
export SLURM_CONF=$D/slurm.conf

NODES=(nodeA nodeB)

stop() {
  for name in "${NODES[@]/#/slurmd-}" slurmctld munged; do
    pidfile=$D/run/$name.pid
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$pidfile"
    fi
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
stop
mkdir -p "$D"/{state,run,log} "${NODES[@]/#/$D/spool/}" /run/munge /etc/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
cpus=$(nproc)
mem=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048) / ${#NODES[@]} ))
cat > "$SLURM_CONF" <<CONF
ClusterName=rsamlocal
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
NodeName=nodeA NodeHostname=localhost NodeAddr=127.0.0.1 Port=6818 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=nodeB NodeHostname=localhost NodeAddr=127.0.0.1 Port=6819 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=nodeA,nodeB Default=YES MaxTime=INFINITE State=UP
CONF
# one munged per machine: reuse a running one (then it is not ours to stop), else start it as the munge user
munge_alive() { munge -n </dev/null >/dev/null 2>&1; }
if ! munge_alive; then
  rm -f /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 50); do munge_alive && break; sleep 0.1; done
  pgrep -x -u munge munged | tail -1 > "$D/run/munged.pid"
fi
/usr/sbin/slurmctld -f "$SLURM_CONF"
for node in "${NODES[@]}"; do /usr/sbin/slurmd -f "$SLURM_CONF" -N "$node"; done
for _ in $(seq 1 150); do
  [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cx idle)" = "${#NODES[@]}" ] && { echo "$SLURM_CONF"; exit 0; }
  sleep 0.2
done
echo "slurm did not become idle; logs in $D/log" >&2
stop
exit 1

# Sourced by the sbatch scripts: environment, MASTER_ADDR, and the `srun rsam fit` line shared by every layout.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
# Lightning does not set thread counts under srun: one rank per task, its CPUs only.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
export MKL_NUM_THREADS=$OMP_NUM_THREADS
export WANDB_MODE=${WANDB_MODE:-offline}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RSAM=${RSAM:-$SLURM_SUBMIT_DIR/.venv/bin/rsam}

# Lightning's SLURMEnvironment takes the first node's *name* as MASTER_ADDR; give it the address Slurm has for that
# node (its NodeAddr, which is the name itself unless the cluster maps it), so that every rank can reach rank 0
export_master_addr() {
  if [ -z "${MASTER_ADDR:-}" ]; then
    local first
    first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    MASTER_ADDR=$(scontrol show node "$first" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
    export MASTER_ADDR=${MASTER_ADDR:-$first}
  fi
}

rsam_fit() {
  local recipe=${1:?usage: sbatch <script> RECIPE [--no-wandb] [dotted.overrides ...]}
  shift
  echo "job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} nodes ${SLURM_JOB_NUM_NODES} tasks/node ${SLURM_NTASKS_PER_NODE}"
  export_master_addr
  # --ckpt_path auto: the newest of <run>/checkpoints/last.ckpt (also written on SIGTERM) and Lightning's requeue
  # checkpoint <run>/hpc_ckpt_N.ckpt (written on SIGUSR1); a fresh start on the first run of the job.
  # "$@": options (--no-wandb) first, then dotted overrides; the layout overrides come last so that they win
  srun --kill-on-bad-exit=1 "$RSAM" fit --config "$recipe" --ckpt_path auto "$@" \
    trainer.num_nodes="$SLURM_JOB_NUM_NODES" trainer.devices="$SLURM_NTASKS_PER_NODE"
}

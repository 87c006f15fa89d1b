#!/bin/bash
# FFHQ 256 autoencoder on 2 nodes x 4 GPUs with SLURM: srun starts one task
# per GPU and Lightning reads the SLURM variables (rank, node, world size).
#
# Submit it from the repository folder:
#     cd /path/to/diffae && sbatch run_ffhq256.sh
# or from any folder:
#     sbatch /path/to/diffae/run_ffhq256.sh
# SLURM runs a copy of this file from its spool folder, so the job finds the
# repository (the folder with run_ffhq256.py) itself: $DIFFAE_DIR when set
# (sbatch --export=ALL,DIFFAE_DIR=/path/to/diffae run_ffhq256.sh), else the
# folder of the submitted script (as `scontrol show job` reports it), else
# the submit folder ($SLURM_SUBMIT_DIR). The log is slurm-<jobid>.out in the
# submit folder. Python: the repository's .venv/bin/python (`make install`),
# or PYTHON=/path/to/python sbatch run_ffhq256.sh.
#
# The official resources (phizaz/diffae run_ffhq256.sh). The official
# "--ntasks=8" is written as 4 tasks per node: Lightning 2.x requires
# --ntasks-per-node (= GPUs per node); every task must see all the GPUs of
# its node (--gres, no --gpus-per-task). Set your cluster's partition.
# Without SLURM: launch.sh (torchrun), see the README.
#SBATCH --job-name=diffae-ffhq256
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-gpu=8
#SBATCH --mem-per-gpu=32GB
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --time=72:00:00
##SBATCH --partition=gpu-cluster

set -euo pipefail
export NCCL_DEBUG=INFO
export PYTHONFAULTHANDLER=1

entry=run_ffhq256.py
repo=
if [ -n "${DIFFAE_DIR:-}" ]; then
    repo=$DIFFAE_DIR
elif [ -f "$(dirname "$0")/$entry" ]; then
    repo=$(dirname "$0")        # run directly: bash run_ffhq256.sh
else
    if [ -n "${SLURM_JOB_ID:-}" ] && command -v scontrol >/dev/null 2>&1; then
        submitted=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null |
            sed -n 's/^[[:space:]]*Command=\([^[:space:]]*\).*/\1/p' |
            head -n 1) || true
        case $submitted in
            '') ;;
            /*) repo=$(dirname "$submitted") ;;
            *) repo=$(dirname "${SLURM_SUBMIT_DIR:-.}/$submitted") ;;
        esac
    fi
    if [ ! -f "$repo/$entry" ] && [ -n "${SLURM_SUBMIT_DIR:-}" ]; then
        repo=$SLURM_SUBMIT_DIR
    fi
fi
if [ -z "$repo" ] || [ ! -f "$repo/$entry" ]; then
    echo "run_ffhq256.sh: cannot find $entry (looked in" \
        "DIFFAE_DIR='${DIFFAE_DIR:-}', the submitted script's folder and" \
        "SLURM_SUBMIT_DIR='${SLURM_SUBMIT_DIR:-}'). Submit from the" \
        "repository folder (cd /path/to/diffae && sbatch run_ffhq256.sh)" \
        "or set DIFFAE_DIR=/path/to/diffae." >&2
    exit 2
fi
cd "$repo"
PYTHON=${PYTHON:-.venv/bin/python}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "run_ffhq256.sh: no Python at PYTHON='$PYTHON' (in $PWD): run" \
        "'make install' there, or set PYTHON=/path/to/python." >&2
    exit 2
fi
srun "$PYTHON" "$entry" "$@"

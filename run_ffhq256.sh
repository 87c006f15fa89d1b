#!/bin/bash
# FFHQ 256 autoencoder on 2 nodes x 4 GPUs (SLURM). Lightning picks up the
# SLURM variables set by srun: one task per GPU.
#SBATCH --job-name=diffae-ffhq256
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --time=14-00:00:00
#SBATCH --output=logs/ffhq256-%j.out

set -euo pipefail
cd "$(dirname "$0")"
mkdir -p logs
srun .venv/bin/python run_ffhq256.py

#!/bin/bash
# Start any run_*.py with torchrun (machines without SLURM): one process per
# GPU. Lightning reads torchrun's variables, and train(conf, gpus, nodes)
# trains with the processes torchrun started (conf.batch_size is the global
# batch, divided over all of them; rank 0 alone logs and checkpoints).
#
# One machine, all its GPUs:
#     ./launch.sh run_ffhq128.py
# One machine, two of its GPUs:
#     CUDA_VISIBLE_DEVICES=0,1 ./launch.sh run_ffhq128.py
# Two machines x 4 GPUs: the same command on each machine, MASTER_ADDR being
# an address of the first machine that the others can reach:
#     NNODES=2 NPROC=4 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 ./launch.sh run_ffhq256.py
#
# Settings (environment): NPROC processes per machine (default: its GPU
# count), NNODES machines (default 1), MASTER_ADDR and MASTER_PORT the
# rendezvous (needed when NNODES > 1; port default 29500), RDZV_ID a name
# the machines of one run share (default diffae), PYTHON (default
# .venv/bin/python of this repository). Under SLURM use run_ffhq256.sh
# (srun starts the processes) instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 1 ] && [ -f "$1" ]; then
    script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
elif [ $# -ge 1 ] && [ -f "$here/$1" ]; then
    script=$here/$1
else
    echo "usage: [NPROC=n] [NNODES=n MASTER_ADDR=host] ./launch.sh" \
        "run_<name>.py [args] (no such script: '${1:-}')" >&2
    exit 2
fi
shift
# the run scripts use paths relative to the repository (datasets/, checkpoints/)
cd "$here"
PYTHON=${PYTHON:-.venv/bin/python}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "launch.sh: no Python at PYTHON='$PYTHON' (in $PWD): run" \
        "'make install', or set PYTHON=/path/to/python." >&2
    exit 2
fi
if [ -z "${NPROC:-}" ]; then
    NPROC=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
    if [ "$NPROC" = 0 ]; then
        echo "launch.sh: torch sees no GPU here; set NPROC=n for n CPU" \
            "(gloo) processes, or check CUDA_VISIBLE_DEVICES" >&2
        exit 2
    fi
fi
NNODES=${NNODES:-1}
if [ "$NNODES" = 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
    # one machine: a local rendezvous on a free port
    rdzv=(--standalone)
else
    if [ -z "${MASTER_ADDR:-}" ]; then
        echo "launch.sh: NNODES=$NNODES needs MASTER_ADDR (an address of" \
            "the first machine that every machine can reach)" >&2
        exit 2
    fi
    rdzv=(--rdzv-backend c10d
          --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}"
          --rdzv-id "${RDZV_ID:-diffae}")
fi
exec "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" \
    --nproc-per-node "$NPROC" "${rdzv[@]}" "$script" "$@"

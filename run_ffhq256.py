"""FFHQ 256 autoencoder: 8 GPUs on two nodes. Do not run this directly:
`sbatch run_ffhq256.sh` starts one process per GPU with srun (Lightning
reads the SLURM environment); without SLURM, on each of the two machines,
`NNODES=2 NPROC=4 MASTER_ADDR=<first machine> ./launch.sh run_ffhq256.py`
(README: Launching on several GPUs / nodes)."""
from experiment import train
from templates import ffhq256_autoenc

if __name__ == '__main__':
    gpus = [0, 1, 2, 3]
    nodes = 2
    conf = ffhq256_autoenc()
    train(conf, gpus=gpus, nodes=nodes)

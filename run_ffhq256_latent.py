"""After run_ffhq256.py: infer the FFHQ 256 latents, then train the latent
DPM on them."""
from experiment import train
from templates import ffhq256_autoenc
from templates_latent import ffhq256_autoenc_latent

if __name__ == '__main__':
    # z_sem of the whole dataset (not GPU heavy; more GPUs still help)
    gpus = [0, 1, 2, 3]
    conf = ffhq256_autoenc()
    conf.eval_programs = ['infer']
    train(conf, gpus=gpus, mode='eval')

    # the latent DPM needs a single GPU
    conf = ffhq256_autoenc_latent()
    train(conf, gpus=[0])

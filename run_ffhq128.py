"""The official pipeline: train the autoencoder, infer its latents, train
the latent DPM, then score unconditional samples (FID, T=10, T_latent=10).

Training requires V100s (or similar); 4 GPUs.
Each step resumes from its last checkpoint."""
from experiment import train
from templates import ffhq128_autoenc_130M
from templates_latent import ffhq128_autoenc_latent

if __name__ == '__main__':
    # 1. the diffusion autoencoder
    gpus = [0, 1, 2, 3]
    conf = ffhq128_autoenc_130M()
    train(conf, gpus=gpus)

    # 2. z_sem of the whole training set -> checkpoints/<name>/latent.pkl
    # (not GPU heavy; more GPUs still help)
    conf.eval_programs = ['infer']
    train(conf, gpus=gpus, mode='eval')

    # 3. the latent DPM (a single GPU is enough)
    conf = ffhq128_autoenc_latent()
    train(conf, gpus=[0])

    # 4. unconditional sampling score (many GPUs speed this up)
    conf.eval_programs = ['fid(10,10)']
    train(conf, gpus=gpus, mode='eval')

"""The DDIM baseline of the paper: train the unconditional model, then
score its T=10 samples (FID)."""
from experiment import train
from templates import ffhq128_ddpm_130M

if __name__ == '__main__':
    gpus = [0, 1, 2, 3]
    conf = ffhq128_ddpm_130M()
    train(conf, gpus=gpus)

    conf.eval_programs = ['fid10']
    train(conf, gpus=gpus, mode='eval')

"""Train the linear attribute classifier used for manipulation (after the
autoencoder is trained and its latents inferred). One GPU is enough."""
from experiment_classifier import train_cls
from templates_cls import ffhq128_autoenc_cls

if __name__ == '__main__':
    conf = ffhq128_autoenc_cls()
    train_cls(conf, gpus=[0])

"""A stand-in for what ``make demo`` writes, made in seconds for the tests
of the notebooks and the web page: the demo templates' architectures
(shapes32_*, about 1.8M parameters) with seeded random weights -- every
parameter perturbed, so that the zero-initialised layers are not zero and
z_sem changes the picture -- and a small shapes LMDB:

    <root>/checkpoints/shapes32_autoenc/last.ckpt, latent.pkl
    <root>/checkpoints/shapes32_autoenc_latent/last.ckpt
    <root>/checkpoints/shapes32_autoenc_cls/last.ckpt
    <root>/datasets/shapes.lmdb
"""
import os

import torch


def _perturb(module, generator, scale=0.05):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def make_demo_tree(root, num_images=8, seed=0):
    from shapes_data import make_shapes_lmdb
    from experiment import LitModel
    from experiment_classifier import ClsModel
    from templates import shapes32_autoenc
    from templates_cls import shapes32_autoenc_cls
    from templates_latent import shapes32_autoenc_latent

    root = os.fspath(root)
    ckpts = os.path.join(root, 'checkpoints')
    g = torch.Generator().manual_seed(seed)

    ae_conf = shapes32_autoenc()
    ae_conf.base_dir = ckpts
    ae = LitModel(ae_conf)
    _perturb(ae.model, g)
    ae.ema_model.load_state_dict(ae.model.state_dict())
    os.makedirs(ae_conf.logdir, exist_ok=True)
    # (what the decoder predicts, as LitModel.on_save_checkpoint records)
    target = ae_conf.beatgans_model_mean_type.value
    torch.save({'state_dict': ae.state_dict(), 'prediction_target': target},
               os.path.join(ae_conf.logdir, 'last.ckpt'))

    # z_sem statistics, as the 'infer' program writes them
    conds = torch.randn(64, ae_conf.style_ch, generator=g) * 0.5 + 0.1
    torch.save({'conds': conds, 'conds_mean': conds.mean(0),
                'conds_std': conds.std(0)},
               os.path.join(ae_conf.logdir, 'latent.pkl'))

    lat_conf = shapes32_autoenc_latent()
    lat_conf.base_dir = ckpts
    lat_conf.pretrain = None
    lat_conf.latent_infer_path = os.path.join(ae_conf.logdir, 'latent.pkl')
    lat = LitModel(lat_conf)
    lat.model.load_state_dict(ae.model.state_dict(), strict=False)
    _perturb(lat.model.latent_net, g)
    lat.ema_model.load_state_dict(lat.model.state_dict())
    os.makedirs(lat_conf.logdir, exist_ok=True)
    torch.save({'state_dict': lat.state_dict(), 'prediction_target': target},
               os.path.join(lat_conf.logdir, 'last.ckpt'))

    cls_conf = shapes32_autoenc_cls()
    cls_conf.base_dir = ckpts
    cls_conf.pretrain = None
    cls_conf.latent_infer_path = lat_conf.latent_infer_path
    cls = ClsModel(cls_conf)
    _perturb(cls.classifier, g, scale=0.5)
    cls.ema_classifier.load_state_dict(cls.classifier.state_dict())
    os.makedirs(cls_conf.logdir, exist_ok=True)
    torch.save({'state_dict': cls.state_dict()},
               os.path.join(cls_conf.logdir, 'last.ckpt'))

    make_shapes_lmdb(os.path.join(root, 'datasets', 'shapes.lmdb'),
                     num_images=num_images, seed=seed)
    return root

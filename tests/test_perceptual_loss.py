"""The opt-in perceptual (LPIPS) term of the training loss
(conf.lpips_loss_weight): the loss against a hand computation with the
``lpips`` package's own module, the official loss untouched at weight 0,
where the gradients go, the checkpoint keys, the settings' errors and the
missing trunk file. (Two processes = one: tests/test_launch.py.)"""
import os

import numpy as np
import pytest
import torch

from choices import ModelMeanType
from conftest import conf_from_recipe, golden, load_recipe, stand_in_alexnet

T_MAX = 200
WEIGHT = 0.7


@pytest.fixture(scope='module')
def trunk(tmp_path_factory):
    return stand_in_alexnet(tmp_path_factory.mktemp('trunk') /
                            'alexnet-owt-7be5be79.pth')


def reference_lpips(trunk_path):
    """``lpips.LPIPS(net='alex')`` with its trunk copied layer by layer
    from the torchvision file (not through the project's loader)."""
    import lpips
    import torchvision
    alex = torchvision.models.alexnet(weights=None)
    state = torch.load(trunk_path, weights_only=True)
    alex.features.load_state_dict({k[len('features.'):]: v
                                   for k, v in state.items()})
    ref = lpips.LPIPS(net='alex', pretrained=True, pnet_rand=True,
                      verbose=False)
    for part in ref.net.children():
        for index, layer in part.named_children():
            layer.load_state_dict(alex.features[int(index)].state_dict())
    return ref.eval()


def tiny_conf(mean_type=ModelMeanType.eps, **lpips):
    conf = conf_from_recipe(load_recipe(golden('tiny_autoenc'))['recipe'])
    conf.beatgans_model_mean_type = mean_type
    for k, v in lpips.items():
        setattr(conf, k, v)
    return conf


def perturbed_model(conf, seed=0):
    """The tiny autoencoder with its zero-initialised layers moved off zero
    (else the output and every gradient through it would be zero)."""
    torch.manual_seed(seed)
    model = conf.make_model_conf().make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(n, 3, 32, 32, generator=g)
    # both sides of the T_MAX cut, the ends of the chain
    t = torch.tensor([0, 57, T_MAX - 1, T_MAX, 640, 999])[:n]
    return x0, noise, t


@pytest.mark.parametrize('mean_type', [ModelMeanType.eps,
                                       ModelMeanType.start_x,
                                       ModelMeanType.v])
def test_loss_is_mse_plus_weighted_lpips_by_hand(trunk, mean_type):
    import metrics
    conf = tiny_conf(mean_type, lpips_loss_weight=WEIGHT,
                     lpips_loss_t_max=T_MAX)
    model = perturbed_model(conf)
    sampler = conf.make_diffusion_conf().make_sampler()
    x0, noise, t = batch()
    got = sampler.training_losses(model, x0, t, noise=noise,
                                  perceptual=metrics.load_lpips(trunk))
    # by hand: the official linear schedule, x_t, the network's output
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = torch.tensor(np.cumprod(1 - betas)[t.numpy()],
                        dtype=torch.float32).view(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x_t = a * x0 + s * noise
    with torch.no_grad():
        out = model(x=x_t, t=t, x_start=x0).pred
    target, x0_hat = {
        ModelMeanType.eps: (noise, (x_t - s * out) / a),
        ModelMeanType.start_x: (x0, out),
        ModelMeanType.v: (a * noise - s * x0, a * x_t - s * out),
    }[mean_type]
    mse = ((target - out)**2).mean(dim=(1, 2, 3))
    with torch.no_grad():
        lp = reference_lpips(trunk)(x0_hat, x0).view(-1)
    want = mse + WEIGHT * (t < T_MAX).float() * lp
    assert (lp > 0).all()
    torch.testing.assert_close(got['lpips'].detach(), lp, rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(got['loss'].detach(), want, rtol=1e-5,
                               atol=1e-6)


def test_weight_zero_is_the_official_loss_bit_for_bit():
    """Weight 0 (the default): no table, no LPIPS call, nothing loaded
    (even with a trunk path that does not exist); the loss is the plain
    MSE of the golden recipe, bit for bit."""
    from experiment import LitModel
    official = tiny_conf()
    off = tiny_conf(lpips_loss_weight=0.0, lpips_loss_trunk_path='/nope.pth')
    model = perturbed_model(official)
    x0, noise, t = batch()

    def never(*_):
        raise AssertionError('LPIPS called with the term off')

    want = official.make_diffusion_conf().make_sampler().training_losses(
        model, x0, t, noise=noise)
    sampler = off.make_diffusion_conf().make_sampler()
    got = sampler.training_losses(model, x0, t, noise=noise,
                                  perceptual=never)
    assert sampler.lpips_weight is None and 'lpips' not in got
    assert torch.equal(got['loss'], want['loss'])
    assert torch.equal(got['loss'], got['mse'])
    assert LitModel(off).perceptual_net() is None


def test_gradients_reach_unet_and_encoder_never_lpips(trunk):
    from experiment import LitModel
    conf = tiny_conf(lpips_loss_weight=WEIGHT, lpips_loss_t_max=T_MAX,
                     lpips_loss_trunk_path=trunk)
    lit = LitModel(conf)
    lit.model.load_state_dict(perturbed_model(conf).state_dict())
    lit.train()
    net = lit.perceptual_net('cpu')
    x0, noise, t = batch()
    losses = lit.sampler.training_losses(lit.model, x0, t, noise=noise,
                                         perceptual=net)
    # the LPIPS term alone, at the steps where it counts
    (losses['lpips'] * (t < T_MAX)).sum().backward()
    enc = [p.grad for p in lit.model.encoder.parameters()]
    unet = [p.grad for n, p in lit.model.named_parameters()
            if n.startswith(('input_blocks', 'output_blocks', 'out.'))]
    assert all(g is not None for g in enc + unet)
    assert sum(float(g.abs().sum()) for g in enc) > 0
    assert sum(float(g.abs().sum()) for g in unet) > 0
    assert not net.training
    assert all(p.grad is None and not p.requires_grad
               for p in net.parameters())
    own = {id(p) for p in net.parameters()}
    opt = lit.configure_optimizers()['optimizer']
    assert not own & {id(p) for g in opt.param_groups for p in g['params']}


def test_checkpoint_has_official_keys_and_loads_with_the_term_off(
        tmp_path, trunk):
    import checkpoint_io
    import shapes_data
    from experiment import LitModel, train
    from tiny_training import tiny_shapes_conf
    lmdb = str(tmp_path / 'shapes.lmdb')
    shapes_data.make_shapes_lmdb(lmdb, num_images=8)
    conf = tiny_shapes_conf(str(tmp_path), lmdb)
    conf.total_samples = conf.batch_size
    conf.lpips_loss_weight, conf.lpips_loss_trunk_path = WEIGHT, trunk
    lit = train(conf, gpus=[0], enable_progress_bar=False,
                enable_model_summary=False)
    assert float(lit.trainer.logged_metrics['lpips']) > 0
    path = os.path.join(conf.logdir, 'last.ckpt')
    state = checkpoint_io.load_checkpoint(path)
    assert state['hyper_parameters']['lpips_loss_weight'] == WEIGHT
    off = tiny_shapes_conf(str(tmp_path), lmdb)
    assert off.lpips_loss_weight == 0
    assert list(state['state_dict']) == list(LitModel(off).state_dict())
    trained = state['optimizer_states'][0]['param_groups'][0]['params']
    assert len(trained) == len(list(lit.model.parameters()))
    loaded = LitModel.from_checkpoint(off, path)
    for k, v in state['state_dict'].items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_trunk_stops_before_the_first_step(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    import metrics
    import shapes_data
    from experiment import train
    from tiny_training import tiny_shapes_conf
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(metrics.ALEXNET_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    lmdb = str(tmp_path / 'shapes.lmdb')
    shapes_data.make_shapes_lmdb(lmdb, num_images=8)
    conf = tiny_shapes_conf(str(tmp_path), lmdb)
    conf.lpips_loss_weight = WEIGHT
    steps = []

    class Steps(pl.Callback):
        def on_train_batch_start(self, *args):
            steps.append(1)

    with pytest.raises(metrics.WeightsNotFoundError) as e:
        train(conf, gpus=[0], callbacks=[Steps()], enable_progress_bar=False,
              enable_model_summary=False)
    msg = str(e.value)
    for part in ('alexnet-owt-7be5be79.pth', 'conf.lpips_loss_trunk_path',
                 'conf.lpips_loss_weight', str(tmp_path / 'checkpoints'),
                 metrics.ALEXNET_WEIGHTS_URL):
        assert part in msg, part
    assert steps == []
    assert not os.path.exists(os.path.join(conf.logdir, 'last.ckpt'))


@pytest.mark.parametrize('field, value', [
    ('lpips_loss_weight', -0.1), ('lpips_loss_weight', float('nan')),
    ('lpips_loss_net', 'resnet'), ('lpips_loss_t_max', 0),
    ('lpips_loss_t_max', 1001)])
def test_bad_setting_is_named_before_any_work(field, value):
    import validation
    conf = tiny_conf(lpips_loss_weight=WEIGHT)
    setattr(conf, field, value)
    with pytest.raises(ValueError, match=f'conf.{field}='):
        validation.check_train_conf(conf)


def test_other_trunks_load_from_their_torchvision_files(tmp_path,
                                                        monkeypatch):
    """'squeeze' reads torchvision's SqueezeNet 1.1 file (Fire modules
    too); 'vgg' names its own file when it is missing."""
    import torchvision

    import metrics
    torch.manual_seed(2)
    squeeze = torchvision.models.squeezenet1_1(weights=None)
    path = tmp_path / 'squeezenet1_1-b8a52dc0.pth'
    torch.save(squeeze.state_dict(), path)
    fn = metrics.load_lpips(str(path), net='squeeze')
    fire = dict(fn.net.slice2.named_children())['3']
    assert torch.equal(fire.squeeze.weight, squeeze.features[3].squeeze.weight)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('DIFFAE_VGG16_WEIGHTS', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(metrics.WeightsNotFoundError,
                       match='vgg16-397923af.pth'):
        metrics.load_lpips(net='vgg')


def test_lpips_runs_in_float32_inside_bf16_autocast(trunk):
    """Under bf16-mixed the term is the float32 metric's value (a bf16
    LPIPS would be off by about 1e-3 relative), on a stub network whose
    output is fixed so that only the LPIPS precision can differ."""
    from types import SimpleNamespace

    import metrics
    conf = tiny_conf(ModelMeanType.start_x, lpips_loss_weight=WEIGHT)
    sampler = conf.make_diffusion_conf().make_sampler()
    x0, noise, t = batch()
    pred = torch.rand_like(x0) * 2 - 1

    class Stub(torch.nn.Module):
        def forward(self, x, t, x_start):
            return SimpleNamespace(pred=pred.bfloat16())

    fn = metrics.load_lpips(trunk)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = sampler.training_losses(Stub(), x0, t, noise=noise,
                                      perceptual=fn)['lpips']
    want = fn(pred.bfloat16().float(), x0).view(-1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        in_bf16 = fn(pred.bfloat16().float(), x0).view(-1).float()
    assert not torch.allclose(in_bf16, want, rtol=1e-4, atol=0)

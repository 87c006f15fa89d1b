"""Training on Lightning 2.x: the loss goes down in both modes, EMA,
resuming, sample grids, inferred latents in dataset order."""
import os
import re

import pytest
import torch

from conftest import conf_from_recipe, golden, load_recipe


def tiny(name='tiny_autoenc'):
    path = golden(name)
    return conf_from_recipe(load_recipe(path)['recipe'])


@pytest.fixture(scope='module')
def shapes_lmdb(tmp_path_factory):
    import shapes_data
    path = tmp_path_factory.mktemp('data') / 'shapes.lmdb'
    shapes_data.make_shapes_lmdb(str(path), num_images=24)
    return str(path)


def shapes_conf(tmp_path, shapes_lmdb):
    """The tiny autoencoder on the shapes data (see tiny_training.py)."""
    from tiny_training import tiny_shapes_conf
    conf = tiny_shapes_conf(str(tmp_path), shapes_lmdb)
    conf.sample_size = 4
    conf.save_every_samples = 8
    conf.ema_decay = 0.9
    conf.T_eval = 2
    return conf


def fixed_eval_loss(sampler, model, x0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(50, 950, len(x0)).long()
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return sampler.training_losses(model, x0, t,
                                       noise=noise)['loss'].mean().item()


def test_optimizer_steps_lower_the_image_loss():
    from experiment import LitModel
    torch.manual_seed(0)
    lit = LitModel(tiny())
    x0 = torch.rand(4, 3, 1, 1).expand(4, 3, 32, 32) * 2 - 1
    before = fixed_eval_loss(lit.sampler, lit.model, x0)
    opt = torch.optim.Adam(lit.model.parameters(), lr=2e-3)
    for _ in range(15):
        loss = lit.training_step({'img': x0, 'index': torch.arange(4)}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_eval_loss(lit.sampler, lit.model, x0)
    assert after < 0.7 * before, (before, after)


def test_optimizer_steps_lower_the_latent_loss(tmp_path):
    from evaluation import save_latents
    from experiment import LitModel
    torch.manual_seed(0)
    conds = torch.randn(64, 64) * 3 + 1
    save_latents(conds, str(tmp_path / 'latent.pkl'))
    conf = tiny('tiny_autoenc_latent')
    conf.latent_infer_path = str(tmp_path / 'latent.pkl')
    conf.lr = 2e-3
    lit = LitModel(conf)
    # only the latent net trains
    trainable = {n for n, p in lit.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('latent_net.') for n in trainable)
    z = lit.normalize(conds[:16])
    before = fixed_eval_loss(lit.latent_sampler, lit.model.latent_net, z)
    opt = lit.configure_optimizers()['optimizer']
    for _ in range(40):
        loss = lit.training_step([conds[:16]], 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_eval_loss(lit.latent_sampler, lit.model.latent_net, z)
    assert after < 0.8 * before, (before, after)


def test_ema_moves_at_the_configured_rate():
    from experiment import ema_update
    conf = tiny('tiny_autoenc_latent')
    online = conf.make_model_conf().make_model()
    ema = conf.make_model_conf().make_model()
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(0.0)
    ema_update(online, ema, 0.9)
    for (name, p) in ema.named_parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.1), msg=name)
    # the latent net's shared linear_emb (two state-dict names) decays once
    layer = ema.latent_net.layers[0]
    assert layer.linear_emb.weight is layer.cond_layers[1].weight
    ema_update(online, ema, 0.9)
    torch.testing.assert_close(layer.linear_emb.weight,
                               torch.full_like(layer.linear_emb.weight, 0.19))


def test_train_resume_and_sample_grids(tmp_path, shapes_lmdb):
    from experiment import train
    import checkpoint_io
    conf = shapes_conf(tmp_path, shapes_lmdb)
    conf.sample_every_samples = 8
    conf.total_samples = 4 * 2
    train(conf, gpus=[0], enable_progress_bar=False)
    ckpt = checkpoint_io.load_checkpoint(os.path.join(conf.logdir,
                                                      'last.ckpt'))
    assert ckpt['global_step'] == 2
    assert set(k.split('.')[0] for k in ckpt['state_dict']) == {
        'model', 'ema_model', 'x_T'}
    assert os.path.exists(os.path.join(conf.logdir, 'sample_enc_ema',
                                       '8.png'))

    # continue to 4 steps: resumes at step 2 with the saved optimizer/EMA
    seen = {}

    import pytorch_lightning as pl

    class Check(pl.Callback):
        def on_train_start(self, trainer, module):
            seen['step'] = trainer.global_step
            opt = trainer.optimizers[0].state_dict()['state']
            seen['exp_avg'] = opt[0]['exp_avg'].clone()
            seen['ema'] = module.ema_model.out[0].weight.clone()

    conf.total_samples = 4 * 4
    train(conf, gpus=[0], callbacks=[Check()], enable_progress_bar=False)
    assert seen['step'] == 2
    torch.testing.assert_close(
        seen['exp_avg'], ckpt['optimizer_states'][0]['state'][0]['exp_avg'])
    torch.testing.assert_close(seen['ema'],
                               ckpt['state_dict']['ema_model.out.0.weight'])
    final = checkpoint_io.load_checkpoint(os.path.join(conf.logdir,
                                                       'last.ckpt'))
    assert final['global_step'] == 4


def test_infer_writes_latents_in_dataset_order(tmp_path, shapes_lmdb):
    import shapes_data
    from experiment import LitModel, train
    conf = shapes_conf(tmp_path, shapes_lmdb)
    conf.total_samples = 4
    conf.batch_size_eval = 5  # 24 images: a ragged last batch
    train(conf, gpus=[0], enable_progress_bar=False)
    conf.eval_programs = ['infer']
    train(conf, gpus=[0], mode='eval', enable_progress_bar=False)
    import checkpoint_io
    state = checkpoint_io.load_checkpoint(os.path.join(conf.logdir,
                                                       'latent.pkl'))
    assert set(state) == {'conds', 'conds_mean', 'conds_std'}
    lit = LitModel.from_checkpoint(conf)
    data = shapes_data.ShapesDataset(shapes_lmdb, image_size=32)
    x = torch.stack([data[i]['img'] for i in range(len(data))])
    want = lit.encode(x)
    torch.testing.assert_close(state['conds'], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state['conds_mean'], want.mean(0))
    torch.testing.assert_close(state['conds_std'], want.std(0))


def test_batch_size_must_divide_over_processes(tmp_path, shapes_lmdb):
    from experiment import train
    conf = shapes_conf(tmp_path, shapes_lmdb)
    conf.batch_size = 3
    with pytest.raises(ValueError, match='batch_size=3'):
        train(conf, gpus=2, accelerator='cpu')


def test_more_gpus_than_exist_is_a_clear_error():
    from experiment import resolve_devices
    n = torch.cuda.device_count()
    with pytest.raises(ValueError, match='asks for GPU'):
        resolve_devices([n, n + 1], accelerator='gpu')


def test_latent_template_without_latents_says_how_to_make_them(tmp_path):
    from experiment import LitModel
    conf = tiny('tiny_autoenc_latent')
    conf.latent_infer_path = str(tmp_path / 'missing' / 'latent.pkl')
    lit = LitModel(conf)
    with pytest.raises(RuntimeError, match="'infer'"):
        lit.train_dataloader()
    with pytest.raises(RuntimeError, match='latent.pkl'):
        lit.sample(1, device='cpu', T=2, T_latent=2)


def test_two_process_ddp_on_cpu(tmp_path):
    """2 gloo processes: each trains on half of the global batch, on
    disjoint samples; 'infer' under DDP writes every row in dataset
    order."""
    import json
    import subprocess
    import sys

    import checkpoint_io
    import shapes_data
    from conftest import ROOT
    from experiment import LitModel
    lmdb = str(tmp_path / 'odd.lmdb')
    shapes_data.make_shapes_lmdb(lmdb, num_images=21)
    script = str(ROOT / 'tests' / 'tiny_training.py')
    for extra in ([], ['--infer']):
        out = subprocess.run([sys.executable, script, str(tmp_path), lmdb,
                              '2', '--ddp', '2', *extra],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    logs = []
    for rank in (0, 1):
        with open(tmp_path / f'batches{rank}.jsonl') as f:
            logs += [json.loads(line) for line in f]
    assert {r['world'] for r in logs} == {2}
    assert {r['local_batch'] for r in logs} == {2}  # global batch 4
    by_rank = [[r['index'] for r in logs if r['rank'] == k] for k in (0, 1)]
    assert len(by_rank[0]) == len(by_rank[1]) == 2
    for a, b in zip(*by_rank):
        assert not set(a) & set(b)
    sys.path.insert(0, str(ROOT / 'tests'))
    from tiny_training import tiny_shapes_conf
    conf = tiny_shapes_conf(str(tmp_path), lmdb)
    ckpt = checkpoint_io.load_checkpoint(os.path.join(conf.logdir,
                                                      'last.ckpt'))
    assert ckpt['global_step'] == 2
    lit = LitModel.from_checkpoint(conf)
    data = shapes_data.ShapesDataset(lmdb, image_size=32)
    want = lit.encode(torch.stack([data[i]['img'] for i in range(21)]))
    got = checkpoint_io.load_checkpoint(os.path.join(conf.logdir,
                                                     'latent.pkl'))['conds']
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_progress_bar_counts_global_steps_with_eta(tmp_path, shapes_lmdb):
    """The training bar runs over the whole run (global step of max_steps,
    with an ETA), across epochs and from the step a resumed run starts at.
    24 images, batch 4: 6 steps an epoch, 8 steps cross an epoch."""
    from experiment import StepProgressBar, train
    seen = []

    class Spy(StepProgressBar):
        def on_train_batch_end(self, trainer, *args):
            super().on_train_batch_end(trainer, *args)
            bar = self.train_progress_bar
            seen.append((bar.n, bar.total, trainer.current_epoch))

        def on_train_end(self, trainer, *args):
            seen.append(str(self.train_progress_bar))
            super().on_train_end(trainer, *args)

    conf = shapes_conf(tmp_path, shapes_lmdb)
    conf.save_every_samples = 4 * 8
    conf.total_samples = 4 * 8
    train(conf, gpus=[0], callbacks=[Spy(refresh_rate=1)])
    steps = [s for s in seen if isinstance(s, tuple)]
    assert [s[0] for s in steps] == list(range(1, 9))
    assert {s[1] for s in steps} == {8}
    assert {s[2] for s in steps} == {0, 1}     # one bar across 2 epochs
    assert '8/8' in seen[-1]
    assert re.search(r'\[\d\d:\d\d<\d\d:\d\d', seen[-1])  # elapsed<ETA
    # resumed to 10 steps: the bar starts at 8 of 10
    seen.clear()
    conf.total_samples = 4 * 10
    train(conf, gpus=[0], callbacks=[Spy(refresh_rate=1)])
    assert [s[0] for s in seen if isinstance(s, tuple)] == [9, 10]
    assert '10/10' in seen[-1]

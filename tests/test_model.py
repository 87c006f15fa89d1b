"""Network behaviour beyond the golden numbers: the encoder learns through
the denoising loss, attention heads, zero-init, checkpointing, bf16."""
import math

import pytest
import torch

from conftest import conf_from_recipe, golden, load_recipe
from model.blocks import qkv_attention
from model.nn import timestep_embedding


def tiny_conf(name='tiny_autoenc'):
    path = golden(name)
    return conf_from_recipe(load_recipe(path)['recipe'])


def perturbed(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def test_encoder_gets_gradients_from_the_denoising_loss():
    conf = tiny_conf()
    model = perturbed(conf.make_model_conf().make_model())
    sampler = conf.make_diffusion_conf().make_sampler()
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([10, 600])
    sampler.training_losses(model, x0, t)['loss'].mean().backward()
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc)
    assert sum(g.abs().sum() for g in enc) > 0


def test_given_cond_bypasses_the_encoder():
    conf = tiny_conf()
    model = perturbed(conf.make_model_conf().make_model())
    sampler = conf.make_diffusion_conf().make_sampler()
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    cond = torch.randn(2, conf.style_ch)
    sampler.training_losses(model, x0, torch.tensor([1, 2]),
                            model_kwargs={'cond': cond})['loss'].sum(
                            ).backward()
    assert all(p.grad is None for p in model.encoder.parameters())


def legacy_attention(qkv, heads):
    """The reference formula, written out: heads split before q/k/v, q and
    k each scaled by ch^-1/4, softmax in float32."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.einsum('bct,bcs->bts', q * scale, k * scale)
    w = torch.softmax(w.float(), dim=-1).type(w.dtype)
    return torch.einsum('bts,bcs->bct', w, v).reshape(b, -1, length)


@pytest.mark.parametrize('heads', [1, 2, 4])
def test_sdpa_attention_keeps_the_legacy_head_split(heads):
    torch.manual_seed(0)
    qkv = torch.randn(3, 3 * 32, 50)
    torch.testing.assert_close(qkv_attention(qkv, heads),
                               legacy_attention(qkv, heads), atol=1e-5,
                               rtol=1e-5)


def test_zero_initialised_layers():
    conf = tiny_conf()
    model = conf.make_model_conf().make_model()
    assert model.out[-1].weight.abs().sum() == 0
    assert model.middle_block[1].proj_out.weight.abs().sum() == 0
    assert model.input_blocks[1][0].out_layers[-1].weight.abs().sum() == 0
    # so a fresh model predicts zero noise
    out = model(torch.randn(1, 3, 32, 32), torch.tensor([5]),
                cond=torch.randn(1, conf.style_ch)).pred
    assert out.abs().max() == 0


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert torch.equal(emb[0, :4], torch.ones(4))
    assert torch.equal(emb[0, 4:], torch.zeros(4))
    assert torch.isclose(emb[1, 0], torch.cos(torch.tensor(3.0)))


def test_gradient_checkpointing_gives_the_same_gradients():
    conf = tiny_conf()
    conf.dropout = 0
    grads = []
    for flag in (False, True):
        conf.net_beatgans_gradient_checkpoint = flag
        torch.manual_seed(0)
        model = perturbed(conf.make_model_conf().make_model())
        x = torch.randn(2, 3, 32, 32)
        out = model(x, torch.tensor([3, 700]), x_start=x).pred
        out.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten()
                                for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_latent_mlp_skips_concatenate_the_original_input():
    conf = tiny_conf('tiny_autoenc_latent')
    net = conf.make_model_conf().latent_net_conf.make_model()
    seen = []
    for i in conf.net_latent_skip_layers:
        net.layers[i].linear.register_forward_hook(
            lambda m, inp, out: seen.append(inp[0]))
    z = torch.randn(3, conf.style_ch)
    net(z, torch.tensor([1, 2, 3]))
    for x in seen:
        torch.testing.assert_close(x[:, -conf.style_ch:], z)


def test_stylespace_sizes_match_encode_stylespace():
    conf = tiny_conf()
    model = conf.make_model_conf().make_model()
    s = model.encode_stylespace(torch.randn(2, 3, 32, 32))
    assert s.shape == (2, sum(model.stylespace_sizes))


def test_bf16_autocast_forward_close_to_float32():
    """The fast path's numerics: a bf16-autocast forward of a tiny
    autoencoder stays within a few percent of float32 (relative to the
    output's scale)."""
    conf = tiny_conf()
    model = perturbed(conf.make_model_conf().make_model()).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([50, 500])
    with torch.no_grad():
        ref = model(x, t, x_start=x).pred
        with torch.autocast('cpu', dtype=torch.bfloat16):
            fast = model(x, t, x_start=x).pred
    rel = (fast.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


@pytest.mark.parametrize('updown', [True, False])
def test_unet_and_encoder_share_the_down_path_layout(updown):
    """The UNet's encoding side and the semantic encoder come from one
    builder: with the same levels they have the same blocks per level,
    resolutions and channels (only the conditioning differs)."""
    from model.unet import BeatGANsEncoderConfig, BeatGANsUNetConfig
    common = dict(image_size=16, in_channels=3, model_channels=8,
                  num_res_blocks=2, attention_resolutions=(8, ),
                  channel_mult=(1, 2, 2), resblock_updown=updown)
    unet = BeatGANsUNetConfig(**common, embed_channels=16).make_model()
    enc = BeatGANsEncoderConfig(**common, out_hid_channels=4,
                                out_channels=4,
                                use_time_condition=False).make_model()
    assert unet.input_num_blocks == [3, 3, 3]
    assert len(unet.input_blocks) == len(enc.input_blocks) == 9
    for a, b in zip(unet.input_blocks, enc.input_blocks):
        assert [type(m) for m in a] == [type(m) for m in b]
    x = torch.randn(2, 3, 16, 16)
    h_u, h_e = x, x
    for a, b in zip(unet.input_blocks, enc.input_blocks):
        h_u = a(h_u, emb=torch.zeros(2, 16))
        h_e = b(h_e)
        assert h_u.shape == h_e.shape
    assert h_u.shape == (2, 16, 4, 4)


def test_unet_with_fewer_encoder_blocks_still_runs():
    """num_input_res_blocks < num_res_blocks: the extra decoder blocks get
    no skip (lateral) and the output keeps the input's shape."""
    from model.unet import BeatGANsUNetConfig
    unet = BeatGANsUNetConfig(image_size=16, model_channels=8,
                              num_res_blocks=2, num_input_res_blocks=1,
                              attention_resolutions=(8, ),
                              channel_mult=(1, 2),
                              embed_channels=16).make_model()
    assert unet.input_num_blocks == [2, 2]
    assert unet.output_num_blocks == [3, 3]
    out = unet(torch.randn(2, 3, 16, 16), t=torch.tensor([1, 500])).pred
    assert out.shape == (2, 3, 16, 16)

"""Every official template builds a network with exactly the official
state-dict keys, shapes and parameter count (so released checkpoints load),
and the template's headline settings match the reference."""
import json

import pytest
import torch

from conftest import golden, manifests

MANIFESTS = manifests()


def test_manifests_present():
    golden('manifests')
    assert MANIFESTS, f'no manifests in {golden("manifests")}'


@pytest.mark.parametrize('path', MANIFESTS, ids=lambda p: p.stem)
def test_template_matches_manifest(path):
    import templates_latent
    ref = json.loads(path.read_text())
    conf = getattr(templates_latent, ref['template'])()
    with torch.device('meta'):
        model = conf.make_model_conf().make_model()
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    want = [(k, list(v)) for k, v in ref['state_dict'].items()]
    missing = sorted(set(k for k, _ in want) - set(k for k, _ in got))
    extra = sorted(set(k for k, _ in got) - set(k for k, _ in want))
    assert not missing and not extra, (missing[:10], extra[:10])
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == ref['num_params']
    for field in ('name', 'img_size', 'batch_size', 'total_samples'):
        if field in ref:
            assert getattr(conf, field) == ref[field], field
    if 'train_mode' in ref:
        assert conf.train_mode.value == ref['train_mode']
    if 'model_type' in ref:
        assert conf.model_type.value == ref['model_type']

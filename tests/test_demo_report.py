"""The demo's report on stand-in checkpoints (tests/demo_tree.py): it writes
the z_sem-only decoding numbers and grid next to the others."""
import json
import os

import generated_data
import run_shapes
from demo_tree import make_demo_tree


def test_report_measures_decoding_from_z_sem_alone(tmp_path):
    root = make_demo_tree(tmp_path / 'tree', num_images=64)
    out = tmp_path / 'out'
    args = run_shapes.parse_args([
        '--quick', '--base-dir', os.path.join(root, 'checkpoints'),
        '--data', os.path.join(root, 'datasets', 'shapes.lmdb'),
        '--out', str(out)])
    run_shapes.report(args, {})
    summary = json.loads((out / 'summary.json').read_text())
    # measured on images the autoencoder never trained on
    held = os.path.join(root, 'datasets', 'shapes_heldout.lmdb')
    assert summary['report_images'] == (
        f"{generated_data.HELDOUT_IMAGES} held-out images ('{held}', seed "
        f'{generated_data.HELDOUT_SEED})')
    assert os.path.isdir(held)
    z = summary['zsem_only_decoding']
    assert set(z['kept']) == {'shape', 'color', 'large', 'left', 'top',
                              'light_background'}
    assert (z['images'], z['seeds'], z['T']) == (16, 2, 10)
    for name, kept in z['kept'].items():
        assert 0 <= kept <= 1 and 0 <= z['chance'][name] <= 1
    assert z['spread_across_z'] >= 0 and z['spread_across_xT'] > 0
    moved = summary['manipulation_change_rate']
    assert set(moved) == {'red', 'green', 'blue', 'yellow', 'large'}
    for label, r in moved.items():
        assert set(r['changed']) == {'0.5', '1.0', '1.5'}, label
        assert r['images'] >= 1
    # what the report ran in: one 32x32 image is a small call, float32
    assert summary['inference_precision_of_one_image'] == '32-true'
    assert summary['inference_precision'] in ('32-true', 'bf16-mixed')
    for grid in ('zsem_only.png', 'reconstructions.png', 'manipulation.png'):
        assert (out / grid).stat().st_size > 0

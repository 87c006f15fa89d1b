"""Shared helpers: where the golden fixtures are and how their recipes
become configs.

The fixtures live in the repository (``tests/golden``, the reference
DiffAE's own numbers; see its README), so a fresh clone runs every test.
``DIFFAE_GOLDEN`` points the tests at another copy."""
import enum
import json
import os
import sys
from pathlib import Path

import lmdb
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOLDEN = Path(os.environ.get('DIFFAE_GOLDEN', ROOT / 'tests' / 'golden'))

# single forward passes / 10-20 step sampling loops (golden README)
ATOL_FORWARD = 1e-4
ATOL_LOOP = 1e-3

# at most 2 threads; OMP_NUM_THREADS wins when set (on a machine shared by
# several heavy jobs, 1 thread each ran the demo UNet's step ~10x faster
# than 2: the threads' barriers wait on preempted partners)
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 0)) or
                      max(1, min(2, os.cpu_count() or 1)))


class MissingFixtureError(FileNotFoundError):
    """A golden fixture that should be in the repository is not there."""


def golden(*parts) -> Path:
    """Path of a golden fixture (``golden('tiny_autoenc')``,
    ``golden('lmdb', 'expected.pt')``); a clear error when it is missing."""
    path = GOLDEN.joinpath(*parts)
    if not path.exists():
        where = ('DIFFAE_GOLDEN=' + os.environ['DIFFAE_GOLDEN']
                 if 'DIFFAE_GOLDEN' in os.environ else 'tests/golden')
        raise MissingFixtureError(
            f'golden fixture {"/".join(parts)} not found at {path} ({where}). '
            'The fixtures are part of the repository (tests/golden, see its '
            'README): restore them with `git checkout -- tests/golden`, or '
            'point DIFFAE_GOLDEN at a complete copy.')
    return path


def golden_dirs(prefix=''):
    """Every golden model fixture (a folder with recipe.json)."""
    if not GOLDEN.exists():
        return []
    return sorted(p for p in GOLDEN.iterdir() if (p / 'recipe.json').exists()
                  and p.name.startswith(prefix))


def manifests():
    d = GOLDEN / 'manifests'
    return sorted(d.glob('*.json')) if d.exists() else []


def conf_from_recipe(recipe: dict):
    """Build a TrainConfig the way the golden README says: base template,
    then the ``apply`` functions, then ``set`` (lists become tuples except
    net_latent_skip_layers; enum fields come as their value strings)."""
    import templates
    import templates_latent
    conf = getattr(templates_latent, recipe['base'])()
    for fn in recipe.get('apply', []):
        conf = getattr(templates_latent, fn)(conf)
    for k, v in recipe.get('set', {}).items():
        assert hasattr(conf, k), f'recipe sets unknown field {k}'
        old = getattr(conf, k)
        if isinstance(old, enum.Enum):
            v = type(old)(v)
        elif isinstance(v, list) and k != 'net_latent_skip_layers':
            v = tuple(v)
        setattr(conf, k, v)
    conf.make_model_conf()
    del templates
    return conf


def load_recipe(path: Path) -> dict:
    return json.loads((path / 'recipe.json').read_text())


def load_golden_ckpt(path: Path):
    """A golden last.ckpt, read with the project's allow-list (the file
    pickles Lightning's ModelCheckpoint class)."""
    import checkpoint_io
    return checkpoint_io.load_checkpoint(path)


def submodel_state(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix)}


@pytest.fixture(scope='session')
def demo_tree(tmp_path_factory):
    """A folder laid out like the repository after ``make demo``, with
    stand-in checkpoints (tests/demo_tree.py); shared by the notebook and
    web-page tests."""
    from demo_tree import make_demo_tree
    return make_demo_tree(tmp_path_factory.mktemp('demo_tree'))


@pytest.fixture(scope='module')
def shapes_lmdb(tmp_path_factory):
    """A 40-image demo LMDB (made once per test module; test_training
    uses a smaller one of its own)."""
    import shapes_data
    path = tmp_path_factory.mktemp('data') / 'shapes.lmdb'
    shapes_data.make_shapes_lmdb(str(path), num_images=40)
    return str(path)


def lmdb_items(path) -> dict:
    """Every key and value of an LMDB, as bytes."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return out


def check_deterministic_lmdb(make, tmp_path):
    """A generated dataset's ``make(path, num_images=, seed=)``
    (make_shapes_lmdb, make_scenes_lmdb): the same arguments give the same
    bytes, another seed other images and attributes; 40 images under
    ``64-00000`` .. ``64-00039``; an existing path is refused."""
    a = make(tmp_path / 'a.lmdb', num_images=40, seed=3)
    b = make(tmp_path / 'b.lmdb', num_images=40, seed=3)
    c = make(tmp_path / 'c.lmdb', num_images=40, seed=4)
    ia, ib, ic = lmdb_items(a), lmdb_items(b), lmdb_items(c)
    assert ia == ib
    assert ia[b'64-00000'] != ic[b'64-00000']
    assert ia[b'attributes'] != ic[b'attributes']
    assert ia[b'length'] == b'40'
    assert sorted(k for k in ia if k.startswith(b'64-'))[-1] == b'64-00039'
    with pytest.raises(FileExistsError):
        make(tmp_path / 'a.lmdb', num_images=40)


def attr_dataset_and_images(dataset_cls, path, num_images):
    """A generated attribute dataset (ShapesAttrDataset, ScenesAttrDataset)
    of ``num_images`` at ``path``, read at 32x32, and all its images
    stacked."""
    ds = dataset_cls(str(path), image_size=32, num_images=num_images)
    imgs = torch.stack([ds[i]['img'] for i in range(len(ds))])
    return ds, imgs


def stand_in_alexnet(path, seed=1):
    """A seeded random torchvision AlexNet's ``features.*`` (the part LPIPS
    reads; the classifier would add 230 MB) saved where the real
    ``alexnet-owt-7be5be79.pth`` would be: the trunk's stand-in."""
    import torchvision
    torch.manual_seed(seed)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith('features.')},
               path)
    return str(path)


def mount_tmpfs(path, size: str):
    """Mount a tmpfs of ``size`` (e.g. '64m') at the new folder ``path``
    (a filesystem other than $TMPDIR's); skips the test where mounting is
    not allowed. Unmount with :func:`umount`."""
    import subprocess
    os.makedirs(path)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                        'tmpfs', str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip('cannot mount a tmpfs here (needs root or '
                    f'CAP_SYS_ADMIN): {r.stderr.strip()}')
    return Path(path)


def umount(path):
    import subprocess
    subprocess.run(['umount', '-l', str(path)], check=False)

"""The four notebooks run top to bottom (nbclient, a real kernel) on
stand-in demo checkpoints, raise nothing, display at least one image
inline and still write their PNG.

Each notebook runs in a folder laid out like the repository after
``make demo`` (tests/demo_tree.py), with the repository on PYTHONPATH; a
cell added after the notebook's ``parameters``-tagged settings cell (as
papermill does) lowers the step counts."""
import os

import nbclient
import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = {'autoencoding.ipynb': 'autoencoding.png',
             'interpolate.ipynb': 'interpolate.png',
             'manipulate.ipynb': 'manipulate.png',
             'sample.ipynb': 'sample.png'}
FEWER_STEPS = 'T_encode = 3\nT_render = 3\nT_latent = 3'


@pytest.fixture(scope='module')
def demo(demo_tree):
    from pathlib import Path
    return Path(demo_tree)


def with_fewer_steps(nb):
    at = [i for i, c in enumerate(nb.cells)
          if 'parameters' in c.metadata.get('tags', [])]
    assert len(at) == 1, 'one settings cell tagged "parameters" expected'
    nb.cells.insert(at[0] + 1, nbformat.v4.new_code_cell(FEWER_STEPS))
    return nb


@pytest.mark.parametrize('name', sorted(NOTEBOOKS))
def test_notebook_runs_and_shows_its_images(name, demo, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(
            os.pathsep) if p]))
    png = demo / NOTEBOOKS[name]
    if png.exists():
        png.unlink()
    nb = with_fewer_steps(nbformat.read(ROOT / name, as_version=4))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name='python3',
        resources={'metadata': {'path': str(demo)}})
    client.execute()  # raises CellExecutionError on any error

    errors = [o for c in nb.cells if c.cell_type == 'code'
              for o in c.outputs if o.output_type == 'error']
    assert not errors
    images = [o for c in nb.cells if c.cell_type == 'code'
              for o in c.outputs
              if o.output_type in ('display_data', 'execute_result')
              and 'image/png' in o.get('data', {})]
    assert images, f'{name} displayed no image'
    assert png.exists(), f'{name} did not write {png.name}'

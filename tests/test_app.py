"""The web page: its logic (app_logic.py) on stand-in demo checkpoints,
and the page itself in headless Chromium (app.py served on 127.0.0.1).

The browser test drives Chromium (Debian's ``chromium`` package, or
$DIFFAE_CHROMIUM) through the ``playwright`` Python package (no browser
download); it is skipped, saying so, only where no Chromium is found. It
saves a screenshot of the page in its temp folder, and to
$DIFFAE_APP_SCREENSHOT when set (docs/app.png was made that way)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

# float32 (precision=None): the checks below compare renders of different
# batch sizes to within float32 round-off (in bf16 the batch changes the
# rounding by up to ~11/255 here; the bf16 path: test_inference_precision)
FAST = dict(T=4, T_inv=4, T_latent=4, precision=None)


@pytest.fixture(scope='module')
def demo(demo_tree):
    from pathlib import Path
    return Path(demo_tree)


@pytest.fixture(scope='module')
def models(demo):
    import app_logic
    return app_logic.load_models(app_logic.Settings(
        base_dir=str(demo / 'checkpoints'), **FAST))


def shape_image(demo, i=0):
    from shapes_data import ShapesDataset
    data = ShapesDataset(str(demo / 'datasets' / 'shapes.lmdb'),
                         image_size=32, do_transform=False,
                         do_normalize=False)
    return data[i]['img']


def diff(a, b):
    return np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))


def test_missing_files_are_named(tmp_path):
    import app_logic
    m = app_logic.load_models(app_logic.Settings(base_dir=str(tmp_path)))
    assert m.autoenc is None and m.classifier is None and m.latent is None
    for part, name in (('autoenc', 'shapes32_autoenc'),
                       ('classifier', 'shapes32_autoenc_cls'),
                       ('latent', 'shapes32_autoenc_latent')):
        assert os.path.join(str(tmp_path), name, 'last.ckpt') in \
            m.problems[part]
        assert 'make demo' in m.problems[part]
    with pytest.raises(app_logic.Unavailable, match='shapes32_autoenc/last'):
        app_logic.reconstruct(m, Image.new('RGB', (32, 32)))
    assert 'unavailable' in m.status()


def test_reconstruct_manipulate_interpolate_sample(models, demo):
    import app_logic
    img, img2 = shape_image(demo, 0), shape_image(demo, 1)
    shown, rec = app_logic.reconstruct(models, img)
    assert shown.size == rec.size == (256, 256)
    # the model input is the upload (32x32, enlarged by pixel repetition)
    assert diff(shown.resize((32, 32), Image.NEAREST), img).max() <= 1
    assert diff(rec, shown).mean() > 5  # random weights: not the input

    # amount 0 renders the reconstruction (z_sem unchanged, cached x_T)
    zero = {k: 0.0 for k in models.attributes}
    assert diff(app_logic.manipulate(models, img, zero), rec).max() == 0
    moved = app_logic.manipulate(models, img, dict(zero, large=1.0))
    assert diff(moved, rec).mean() > 1

    strip = app_logic.interpolate(models, img, img2, steps=3)
    assert len(strip) == 3
    _, rec2 = app_logic.reconstruct(models, img2)
    # the ends are the two reconstructions (batch round-off aside)
    assert diff(strip[0], rec).max() <= 2 and diff(strip[-1], rec2).max() <= 2
    assert diff(strip[1], rec).mean() > 1 and diff(strip[1], rec2).mean() > 1

    samples = app_logic.sample(models, n=2, seed=3)
    again = app_logic.sample(models, n=2, seed=3)
    assert len(samples) == 2 and diff(samples[0], again[0]).max() == 0
    assert diff(samples[0], samples[1]).mean() > 1

    with pytest.raises(app_logic.Unavailable, match='two images'):
        app_logic.interpolate(models, img, None)
    # alignment without dlib's landmark file says what is missing
    if models.aligner is None:
        with pytest.raises(app_logic.Unavailable, match='landmark file'):
            app_logic.reconstruct(models, img, align_face=True)


def test_align_uses_the_main_face_and_names_the_count(models):
    import app_logic
    if models.aligner is None:
        pytest.skip('the real face detector is not installed: '
                    + models.problems['aligner'])
    photos = ROOT / 'tests' / 'photos'
    img = Image.open(photos / 'astronaut.jpg')
    shown, _ = app_logic.reconstruct(models, img, align_face=True)
    note = app_logic.align_upload(models, img)[1]
    assert note.startswith('upload: 2 faces found, aligned the main one')
    import align
    import cli
    crop = align.align_photo(img, models.aligner).crops[0]
    want = app_logic.to_pil((cli.to_model_input(crop, 32) + 1) / 2)
    assert diff(shown, want).max() == 0
    with pytest.raises(app_logic.Unavailable, match='no face found'):
        app_logic.reconstruct(models, Image.open(photos / 'coffee.jpg'),
                              align_face=True)


# ----------------------------------------------------------------------
# the page in a real browser
# ----------------------------------------------------------------------
def chromium_path():
    for p in (os.environ.get('DIFFAE_CHROMIUM'), shutil.which('chromium'),
              shutil.which('chromium-browser')):
        if p and os.path.exists(p):
            return p
    return None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_server(url, proc, log, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError('app.py exited:\n' + log.read_text())
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f'app.py did not serve {url} within {timeout} s:\n'
                         + log.read_text())


@pytest.fixture(scope='module')
def served(demo, tmp_path_factory):
    """(url, Chromium path) of app.py serving the demo tree (one server
    for this module's browser tests)."""
    browser_exe = chromium_path()
    if browser_exe is None:
        pytest.skip('no Chromium found (apt-get install chromium, or set '
                    'DIFFAE_CHROMIUM)')
    port = free_port()
    log = tmp_path_factory.mktemp('app') / 'app.log'
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False',
               PYTHONUNBUFFERED='1')
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / 'app.py'), '--base-dir',
             str(demo / 'checkpoints'), '--port', str(port), '--T', '4',
             '--T-inv', '4', '--T-latent', '4', '--device', 'cpu'],
            cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f'http://127.0.0.1:{port}/'
        wait_for_server(url, proc, log)
        yield url, browser_exe
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def open_page(pw, served, upload):
    """(browser, page) of the served page with ``upload`` as the image."""
    url, browser_exe = served
    browser = pw.chromium.launch(executable_path=browser_exe, headless=True,
                                 args=['--no-sandbox'])
    page = browser.new_page(viewport={'width': 1280, 'height': 800})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator('#img_a input[type=file]').set_input_files(str(upload))
    page.locator('#img_a img').wait_for()
    return browser, page


def fetch_image(page, locator, path):
    """The PNG an <img> shows, saved to ``path`` and opened (RGB)."""
    path.write_bytes(page.request.get(locator.get_attribute('src')).body())
    return Image.open(path).convert('RGB')


def test_page_in_headless_chromium(demo, served, tmp_path):
    # a requirement (requirements.txt): a missing package fails the test
    from playwright.sync_api import sync_playwright

    upload = tmp_path / 'shape.png'
    shape_image(demo, 2).save(upload)
    with sync_playwright() as pw:
        browser, page = open_page(pw, served, upload)
        try:
            page.get_by_role('button', name='Reconstruct').click()
            rec_img = page.locator('#recon img')
            rec_img.wait_for()
            recon = fetch_image(page, rec_img, tmp_path / 'recon.png')
            # move the 'large' slider: click at 90% of its track
            track = page.locator('#attr_large input[type=range]')
            track.scroll_into_view_if_needed()
            box = track.bounding_box()
            page.mouse.click(box['x'] + 0.9 * box['width'],
                             box['y'] + box['height'] / 2)
            amount = float(track.input_value())
            assert amount > 0.5, amount
            out_img = page.locator('#edited img')
            out_img.wait_for()
            edited = fetch_image(page, out_img, tmp_path / 'edited.png')
            page.screenshot(path=str(tmp_path / 'app.png'), full_page=True)
        finally:
            browser.close()

    assert edited.size == (256, 256)
    shown = Image.open(upload).convert('RGB').resize((256, 256),
                                                     Image.NEAREST)
    assert diff(edited, shown).mean() > 5
    # the slider moved z_sem: not the plain reconstruction
    assert recon.size == (256, 256) and diff(edited, recon).mean() > 1
    if os.environ.get('DIFFAE_APP_SCREENSHOT'):
        # a small PNG for the README (128 colours)
        Image.open(tmp_path / 'app.png').convert('RGB').quantize(128).save(
            os.environ['DIFFAE_APP_SCREENSHOT'], optimize=True)


def test_page_aligns_the_main_face_of_a_real_photo(served, tmp_path):
    """Align ticked on a real photo with a false second detection: the
    page shows the aligned crop of the main face as the model's input,
    reconstructs it and says how many faces it found."""
    import align
    import app_logic
    import cli
    from playwright.sync_api import expect, sync_playwright
    try:
        detector = align.DlibLandmarks()
    except align.DetectorUnavailableError as e:
        pytest.skip(f'the real face detector is not installed: {e}')
    upload = ROOT / 'tests' / 'photos' / 'astronaut.jpg'
    with sync_playwright() as pw:
        browser, page = open_page(pw, served, upload)
        try:
            page.get_by_label('Align the face first').check()
            page.get_by_role('button', name='Reconstruct').click()
            expect(page.locator('#align_note')).to_contain_text(
                '2 faces found, aligned the main one')
            shown = fetch_image(page, page.locator('#model_in img'),
                                tmp_path / 'model_in.png')
            page.locator('#recon img').wait_for()
        finally:
            browser.close()
    # align.py's crop of the main face, as the demo model (32 px) sees it
    crop = align.align_photo(Image.open(upload), detector).crops[0]
    want = app_logic.to_pil((cli.to_model_input(crop, 32) + 1) / 2)
    assert diff(shown, want).max() <= 1

"""A local web page for a trained DiffAE (Gradio):

    python app.py                      # the demo's checkpoints (make demo)
    python app.py --template ffhq256_autoenc --cls-template \\
        ffhq256_autoenc_cls --latent-template ffhq256_autoenc_latent

Upload one or two images (optionally FFHQ-aligned with align.py: the main
face; the page says how many faces it found) ->
reconstruction; attribute sliders (the trained classifier's directions);
interpolation between the two uploads; unconditional samples through the
latent DPM. Runs on the CPU; renders are queued and show their progress.
Open http://127.0.0.1:7860 (``--port``). The page logic is app_logic.py.
"""
import argparse
import os
import sys

import torch

import app_logic as logic
from inference import add_front_end_arguments, front_end_precision


def tab_edit(gr, models, run, img_a, align_face, align_note):
    """Reconstruction, and one slider per classifier attribute."""
    with gr.Row():
        model_in = gr.Image(label='Model input', format='png',
                            elem_id='model_in', interactive=False,
                            height=200)
        recon = gr.Image(label='Reconstruction', format='png',
                         elem_id='recon', interactive=False, height=200)
        edited = gr.Image(label='Manipulated', format='png',
                          elem_id='edited', interactive=False, height=200)
    btn = gr.Button('Reconstruct', variant='primary')
    def rec(im, al, progress=gr.Progress(track_tqdm=True)):
        shown, out = run(logic.reconstruct, models, im, al)
        # how many faces the aligner saw and which one it used (cached)
        note = logic.align_upload(models, im)[1] if al else ''
        return shown, out, note
    btn.click(rec, [img_a, align_face], [model_in, recon, align_note])
    names = models.attributes
    if not names:
        gr.Markdown('Manipulation unavailable: '
                    + models.problems.get('classifier', ''))
        return
    gr.Markdown('Attribute amounts along the classifier directions (0 '
                'leaves z_sem as it is); release a slider to render.')
    sliders = []
    with gr.Row():
        for name in names:
            sliders.append(gr.Slider(-1, 1, value=0, step=0.05, label=name,
                                     elem_id=f'attr_{name}', min_width=160))

    def edit(im, al, *amounts, progress=gr.Progress(track_tqdm=True)):
        return run(logic.manipulate, models, im, dict(zip(names, amounts)),
                   al)
    for sl in sliders:
        sl.release(edit, [img_a, align_face] + sliders, edited)


def tab_interpolate(gr, models, run, img_a, img_b, align_face):
    steps = gr.Slider(3, 11, value=5, step=1, label='images')
    btn = gr.Button('Interpolate the two images', variant='primary')
    strip = gr.Gallery(label='Interpolation', columns=11, elem_id='strip',
                       format='png')
    def inter(a, b, n, al, progress=gr.Progress(track_tqdm=True)):
        return run(logic.interpolate, models, a, b, n, al)
    btn.click(inter, [img_a, img_b, steps, align_face], strip)


def tab_sample(gr, models, run):
    if models.latent is None:
        gr.Markdown('Samples unavailable: '
                    + models.problems.get('latent', ''))
    with gr.Row():
        n = gr.Slider(1, 16, value=4, step=1, label='samples')
        seed = gr.Number(0, precision=0, label='seed')
    btn = gr.Button('Sample', variant='primary',
                    interactive=models.latent is not None)
    gallery = gr.Gallery(label='Samples', columns=8, elem_id='samples',
                         format='png')
    def smp(k, sd, progress=gr.Progress(track_tqdm=True)):
        return run(logic.sample, models, k, sd)
    btn.click(smp, [n, seed], gallery)


def build(models: logic.Models):
    """The Gradio page around the functions of app_logic."""
    import gradio as gr

    def run(fn, *args):
        # progress=True: the samplers' tqdm bars, which the handlers'
        # gr.Progress(track_tqdm=True) shows on the page
        try:
            return fn(*args, progress=True)
        except (logic.Unavailable, FileNotFoundError, RuntimeError,
                ValueError) as e:
            # the project's errors name the file or setting to fix
            raise gr.Error(str(e))

    s = models.settings
    missing = any(getattr(models, p) is None
                  for p in ('autoenc', 'classifier', 'latent'))
    with gr.Blocks(title='DiffAE, made real') as page:
        gr.Markdown(
            '## Diffusion Autoencoders\n'
            f'`{s.template}` · render T={s.T}, encode T={s.T_inv} · '
            f'{s.device}')
        with gr.Accordion('Models', open=missing):
            gr.Markdown(models.status())
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                img_a = gr.Image(type='pil', label='Image', elem_id='img_a',
                                 format='png', height=220)
                img_b = gr.Image(type='pil', label='Second image '
                                 '(interpolation)', elem_id='img_b',
                                 format='png', height=220)
                align_face = gr.Checkbox(
                    label='Align the face first (FFHQ recipe, align.py)',
                    value=False, interactive=models.aligner is not None,
                    info=None if models.aligner is not None else
                    'unavailable: ' + models.problems.get('aligner', ''))
                align_note = gr.Markdown(elem_id='align_note')
            with gr.Column(scale=3):
                with gr.Tab('Reconstruct & manipulate'):
                    tab_edit(gr, models, run, img_a, align_face,
                             align_note)
                with gr.Tab('Interpolate'):
                    tab_interpolate(gr, models, run, img_a, img_b,
                                    align_face)
                with gr.Tab('Sample'):
                    tab_sample(gr, models, run)
    # one render at a time (CPU); the others wait in the queue
    page.queue(default_concurrency_limit=1)
    return page


def parse_args(argv=None):
    d = logic.Settings()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--template', default=d.template,
                   help='autoencoder template (default: the demo)')
    p.add_argument('--ckpt', default=None,
                   help='its checkpoint (default <base-dir>/<name>/'
                   'last.ckpt) or a .safetensors export (cli.py export; '
                   'it brings its own template; so do --cls-ckpt and '
                   '--latent-ckpt files)')
    p.add_argument('--cls-template', default=d.cls_template,
                   help="classifier template ('' for none)")
    p.add_argument('--cls-ckpt', default=None)
    p.add_argument('--latent-template', default=d.latent_template,
                   help="latent DPM template for samples ('' for none)")
    p.add_argument('--latent-ckpt', default=None)
    p.add_argument('--base-dir', default=d.base_dir,
                   help='where the checkpoints are (conf.base_dir)')
    p.add_argument('--predictor', default=None,
                   help='dlib shape_predictor_68_face_landmarks.dat for '
                   'face alignment (default $DIFFAE_DLIB_LANDMARKS, '
                   'checkpoints/, then /usr/share/dlib/)')
    add_front_end_arguments(p)
    p.add_argument('--T', type=int, default=None,
                   help='render steps (default: DDIM 20, dpmpp_2m 7)')
    p.add_argument('--T-inv', type=int, default=None,
                   help='steps to encode x_T (default: DDIM 50, dpmpp_2m '
                   '17)')
    p.add_argument('--T-latent', type=int, default=None,
                   help='latent DPM steps for samples (default 50)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available()
                   else 'cpu')
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=7860)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    settings = logic.Settings(
        template=args.template, ckpt=args.ckpt,
        cls_template=args.cls_template or None, cls_ckpt=args.cls_ckpt,
        latent_template=args.latent_template or None,
        latent_ckpt=args.latent_ckpt, base_dir=args.base_dir,
        predictor=args.predictor, solver=args.solver, T=args.T,
        T_inv=args.T_inv, T_latent=args.T_latent, device=args.device,
        precision=front_end_precision(args.precision))
    models = logic.load_models(settings)
    print(models.status().replace('**', ''), flush=True)
    if models.autoenc is None:
        print(f"warning: {models.problems['autoenc']}; the page opens but "
              'cannot render', file=sys.stderr)
    build(models).launch(server_name=args.host, server_port=args.port,
                         show_error=True, footer_links=[])


if __name__ == '__main__':
    main()

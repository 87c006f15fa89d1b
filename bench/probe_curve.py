"""When does the encoder learn an attribute? Train a study recipe and probe
the EMA encoder's z_sem on the held-out images during training.

    python bench/probe_curve.py --variant x0_40k --steps 3000 \
        --set lr=0.002 --set warmup=200 --name lr2e3

Every --every steps the held-out images are encoded by the EMA encoder and
each attribute's linear-probe AUROC (zsem_probe.linear_probe) is written
as one JSON line to outputs/study/probe_curve_<dataset>_<name>.jsonl; at
the end, the z_sem-only decoding report (random x_T) of the last
checkpoint on --images held-out images.

This is cheaper than bench/zsem_study.py (no classifier, no
manipulations) and answers one question: is z_sem picking the attribute
up, and when. On the shapes the encoder's shape-type AUROC falls *below*
its random-initialisation level while colour, size and position are
learnt, and only rises once the decoder can draw the shape type (between
3000 and 4500 steps of 32 images in the x0_40k run; with seed 1, not
by 4500).

--set takes config fields (values parsed as JSON, else kept as strings;
an enum field by its value, e.g. beatgans_model_mean_type=eps);
--encoder-lr-scale gives the encoder its own learning rate (a study-only
override of the optimizer: not a config field).
"""
import argparse
import enum
import json
import os
import sys
import time

import pytorch_lightning as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zsem_probe  # noqa: E402
import experiment  # noqa: E402
import hardware  # noqa: E402
import study_recipes  # noqa: E402
from inference import DiffAE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='shapes',
                   choices=sorted(study_recipes.DATASETS))
    p.add_argument('--variant', default='x0_40k',
                   choices=sorted(study_recipes.VARIANTS))
    p.add_argument('--steps', type=int, default=3000)
    p.add_argument('--every', type=int, default=500,
                   help='probe every this many optimizer steps')
    p.add_argument('--set', action='append', default=[],
                   metavar='FIELD=VALUE', help='config override')
    p.add_argument('--encoder-lr-scale', type=float, default=1.0)
    p.add_argument('--name', default=None,
                   help='run name (default: the variant)')
    p.add_argument('--images', type=int, default=64,
                   help='held-out images of the final z_sem-only report')
    p.add_argument('--base-dir', default='checkpoints/probe_curve')
    return p.parse_args(argv)


def parse_override(text):
    field, sep, value = text.partition('=')
    if not sep:
        raise SystemExit(f'--set needs FIELD=VALUE, got {text!r}')
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return field, tuple(value) if isinstance(value, list) else value


def scaled_encoder_lr(scale):
    """configure_optimizers with the encoder at ``scale`` x conf.lr (Adam,
    constant lr, as the demo template)."""
    def configure_optimizers(self):
        enc = list(self.model.encoder.parameters())
        ids = {id(p) for p in enc}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        return torch.optim.Adam(
            [{'params': rest}, {'params': enc, 'lr': self.conf.lr * scale}],
            lr=self.conf.lr, weight_decay=self.conf.weight_decay)
    return configure_optimizers


class ProbeCallback(pl.Callback):
    """Probe the EMA encoder on ``images`` every ``every`` steps."""

    def __init__(self, images, labels, names, every, last, out):
        self.images, self.labels, self.names = images, labels, names
        self.every, self.last, self.out = every, last, out
        self.t0 = time.time()

    def on_train_batch_end(self, trainer, lit, *args):
        step = trainer.global_step
        if step % self.every and step != self.last:
            return
        with torch.no_grad():
            enc = lit.ema_model.encoder
            z = torch.cat([enc(self.images[i:i + 250]).float()
                           for i in range(0, len(self.images), 250)])
        probe = zsem_probe.linear_probe(z, self.labels, self.names)
        row = {'step': step,
               'minutes': round((time.time() - self.t0) / 60, 1),
               'auroc': {k: round(probe[k], 3)
                         for k in self.names + ['mean']}}
        print('probe', json.dumps(row), flush=True)
        self.out.write(json.dumps(row) + '\n')
        self.out.flush()


def main(argv=None):
    args = parse_args(argv)
    name = args.name or args.variant
    ds = study_recipes.DATASETS[args.dataset]
    conf = study_recipes.autoencoder_conf(args.dataset, args.variant,
                                          args.steps, args.base_dir)
    for text in args.set:
        field, value = parse_override(text)
        if not hasattr(conf, field):
            raise SystemExit(f'--set: TrainConfig has no field {field!r}')
        current = getattr(conf, field)
        if isinstance(current, enum.Enum):  # e.g. ModelMeanType by value
            try:
                value = type(current)(value)
            except ValueError:
                raise SystemExit(
                    f'--set {field}: {value!r} is not one of '
                    f'{[m.value for m in type(current)]}') from None
        setattr(conf, field, value)
    conf.name = f'{args.dataset}_{name}'
    conf.make_model_conf()
    if args.encoder_lr_scale != 1.0:
        if conf.warmup > 0 or conf.lr_decay != 'none':
            raise SystemExit('--encoder-lr-scale builds a constant-lr Adam: '
                             'it cannot be combined with warmup/lr_decay')
        experiment.LitModel.configure_optimizers = scaled_encoder_lr(
            args.encoder_lr_scale)
    held = study_recipes.heldout_data(args.dataset)
    images = torch.stack([held[i]['img'] for i in range(len(held))])
    path = f'outputs/study/probe_curve_{args.dataset}_{name}.jsonl'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'a') as out:
        out.write(json.dumps({'run': name, 'variant': args.variant,
                              'set': args.set, 'encoder_lr_scale':
                              args.encoder_lr_scale, 'cpu':
                              hardware.read_facts('cpu').describe()})
                  + '\n')
        cb = ProbeCallback(images, held.labels, ds.label_names, args.every,
                           args.steps, out)
        experiment.train(conf, gpus=[], callbacks=[cb],
                         enable_progress_bar=False)
        torch.manual_seed(0)
        rep = zsem_probe.zsem_decoding_report(
            DiffAE.from_checkpoint(conf, precision=None),
            images[:args.images],
            ds.read_attributes, T=20, seeds=2)
        row = {'step': args.steps, 'zsem_only_kept': rep['kept'],
               'chance': rep['chance']}
        print('zsem_only', json.dumps(row), flush=True)
        out.write(json.dumps(row) + '\n')


if __name__ == '__main__':
    main()

"""Markdown tables of the z_sem study's records (bench/zsem_study.py).

    python bench/study_table.py [outputs/study]

One table per dataset and step count (a row per recipe), then one curve
table per dataset (a row per recipe and step count). Columns: what stays
when z_sem is decoded from random x_T (kept / chance), the pixel spreads
across z_sem and across x_T, the share of images that a move along the
classifier direction (amount 1, inverted x_T) takes to the target class
(colour or sky: mean over the classes; size or horizon), the inverted-x_T
reconstruction MSE and the linear probe's mean AUROC against the best of
the random encoders (and whether it beats all of them on every split).

The first table of a dataset is measured on the first training images;
the second on held-out images (generated with another seed, never
trained on), for the records that have them (``heldout``; older runs
measured again with ``zsem_study.py --measure-only``, whose records only
appear there).
"""
import glob
import json
import os
import sys
from collections import defaultdict

# per dataset: (attribute columns kept, the categorical group moved as a
# mean over its classes, the binary label moved)
COLUMNS = {
    'shapes': (('color', 'large', 'shape', 'light_background'),
               ('red', 'green', 'blue', 'yellow'), 'large'),
    'scenes': (('sky', 'ground', 'high_horizon', 'sun'),
               ('day', 'dusk', 'night', 'overcast'), 'high_horizon'),
}


def load(folder):
    recs = []
    for path in sorted(glob.glob(os.path.join(folder, '*.jsonl'))):
        with open(path) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    return recs


def row(rec):
    attrs, group, binary = COLUMNS[rec['dataset']]
    z = rec['zsem_only']
    cells = [rec['variant'], str(rec['steps'])]
    cells += [f"{z['kept'][a]:.2f} / {z['chance'][a]:.2f}" for a in attrs]
    cells.append(f"{z['spread_across_z']:.3f} / {z['spread_across_xT']:.3f}")
    moved = rec['manipulation']
    group_rate = sum(moved[c]['changed']['1.0'] for c in group) / len(group)
    cells.append(f'{group_rate:.2f}')
    cells.append(f"{moved[binary]['changed']['1.0']:.2f}")
    cells.append(f"{rec['recon_mse_inverted_xT']:.4f}")
    if 'probe_trained' in rec:
        t, rnd = rec['probe_trained'], rec['probe_random']
        beats = all(s > max(r['mean_by_split'][i] for r in rnd)
                    for i, s in enumerate(t['mean_by_split']))
        cells.append(f"{t['mean']:.3f} vs {max(r['mean'] for r in rnd):.3f}"
                     f"{' (all splits)' if beats else ''}")
    else:
        cells.append('-')
    return '| ' + ' | '.join(cells) + ' |'


def header(dataset):
    attrs, _, binary = COLUMNS[dataset]
    names = ['recipe', 'steps'] + [f'{a} kept / chance' for a in attrs] + [
        'spread z / x_T', f'{"colour" if dataset == "shapes" else "sky"} '
        'moved', f'{binary} moved', 'inv. MSE', 'probe vs best random']
    return ('| ' + ' | '.join(names) + ' |\n'
            + '| ' + ' | '.join('---' for _ in names) + ' |')


def main(folder='outputs/study'):
    recs = load(folder)
    by = defaultdict(list)
    for r in recs:
        by[r['dataset']].append(r)
    for dataset, rs in by.items():
        rs = sorted(rs, key=lambda r: (r['variant'], r['steps']))
        cpus = sorted({r.get('cpu', '?') for r in rs})
        print(f'\n### {dataset}, training images (CPU: {", ".join(cpus)})'
              '\n')
        print(header(dataset))
        for r in rs:
            if 'checkpoint' not in r:   # a re-measurement: held-out only
                print(row(r))
        held = [{**r['heldout'], 'dataset': dataset, 'variant': r['variant'],
                 'steps': r['steps']} for r in rs if 'heldout' in r]
        if held:
            print(f'\n### {dataset}, held-out images\n')
            print(header(dataset))
            for r in held:
                print(row(r))


if __name__ == '__main__':
    main(*sys.argv[1:])

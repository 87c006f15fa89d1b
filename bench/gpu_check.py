"""One-shot check of the GPU path: correctness and speed of training and
sampling, in one command, for the first GPU machine we get.

    python bench/gpu_check.py                       # on a GPU machine
    python bench/gpu_check.py --device cpu --tiny   # the test suite's dry-run
    python bench/gpu_check.py --find-batch ffhq256_autoenc  # your GPU's batch

Prints one JSON line per check (also written to --out; on a GPU by default
bench/results/gpu_check_<gpu>_<date>.jsonl) and a short summary at the end.
Downloads nothing. No check starts after --budget-s (default 400 s; the
last one started may run a few minutes more, about 8 minutes in all on
one GPU): the checks left are reported as skipped.

Checks, in this order:
  facts       GPU name, compute capability, torch / CUDA, the GPU math
              settings (conf.tf32, conf.cudnn_benchmark)
  train       Lightning training steps (LitModel, make_trainer) of
              ffhq128_autoenc_130M and ffhq256_autoenc at the official
              per-GPU batch, in the official precision (conf.fp16 ->
              16-mixed, with its GradScaler) and in bf16-mixed: finite
              losses, seconds per step, peak memory, pinned batches
  render      DDIM (T=10) of the golden tiny model on the device against
              the official CPU render (tests/golden) and this project's CPU
              render, TF32 off (golden tolerance 1e-3); TF32 on reported
  checkpoint  a checkpoint written on the device loads on the CPU
              (map_location='cpu'), one written on the CPU loads on the
              device, tensors equal
  ddp         train() under torchrun --nproc-per-node <visible GPUs>
              (NCCL): two steps, exactly one last.ckpt
  compile     Lightning training steps with conf.compile: finite, same
              losses as eager, checkpoint keys official (no _orig_mod.)
  speed       bench/train_step.py at 128, then 256 px: fp32 and fp16 (the
              reference's computation), auto (the project's default:
              fast16 for the official templates), bf16: training / DDIM
              render img/s, peak memory
  speed_compile  bench/train_step.py bf16 (auto before sm80) +
              conf.compile, compile time in warmup_seconds (128 px here,
              256 px last)
  batch       the largest per-GPU batch that fits (doubling from the
              official one, then two bisection steps) and training steps
              at it

--tiny: the golden tiny model (32 px) stands in for the templates, batches
of 2 (the batch search stops at 4), compile with the aot_eager backend.
The ddp check then runs train() in this process without torchrun (two
gloo processes cost about a minute on 2 shared cores; gloo DDP is covered
by tests/test_training.py::test_two_process_ddp_on_cpu).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch._dynamo.utils import counters
from torch.utils.data import Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import checkpoint_io  # noqa: E402
import hardware  # noqa: E402
import templates  # noqa: E402
import train_step  # noqa: E402  (bench/train_step.py)
from experiment import LitModel, make_trainer, train  # noqa: E402
from inference import DiffAE  # noqa: E402

GOLDEN = os.path.join(ROOT, 'tests', 'golden', 'tiny_autoenc')
# a 10-step DDIM loop across machines (tests/golden/README.md)
GOLDEN_ATOL = 1e-3
# the official runs' GPUs (run_ffhq128.py: 4; run_ffhq256.py: 2 nodes x 4):
# conf.batch_size is global, so the per-GPU batch is batch_size / GPUs
OFFICIAL_GPUS = {'ffhq128_autoenc_130M': 4, 'ffhq256_autoenc': 8}
# training img/s per GPU of the official code at 128 px: the maintainers'
# ~5 days on 4 V100s for 72M images (their issue #20), and PDAE (NeurIPS
# 2022) with 4x A100 at batch 128 (not reproduced here)
ANCHORS = {'V100 (official, issue #20)': 42.0, 'A100 (PDAE paper)': 75.4}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available()
                   else 'cpu', help='cuda or cpu')
    p.add_argument('--tiny', action='store_true',
                   help='the golden tiny model instead of the templates')
    p.add_argument('--out', default=None,
                   help='JSON-lines file (default on a GPU: bench/results/'
                   'gpu_check_<gpu>_<date>.jsonl; with --tiny: none)')
    p.add_argument('--budget-s', type=float, default=400,
                   help='no check starts after this many seconds')
    p.add_argument('--steps', type=int, default=3,
                   help='Lightning training steps per train check')
    p.add_argument('--batch-limit', type=int, default=1024,
                   help='largest per-GPU batch the search tries')
    p.add_argument('--find-batch', metavar='TEMPLATE', default=None,
                   help='only search the largest per-GPU batch of TEMPLATE '
                   'and say how to set batch_size / accum_batches')
    p.add_argument('--only', default='',
                   help='comma-separated checks to run (default: all), '
                   'e.g. speed,speed_compile')
    p.add_argument('--workdir', default=None,
                   help='where checkpoints go (default: a temporary folder)')
    p.add_argument('--ddp-worker', metavar='DIR', default=None,
                   help=argparse.SUPPRESS)  # the torchrun child
    return p.parse_args(argv)


class Report:
    """Collects, prints and writes the JSON lines; keeps the budget."""

    def __init__(self, out, budget_s, only=()):
        self.only = set(only)
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.lines = []
        self.out = out
        if out:
            os.makedirs(os.path.dirname(os.path.abspath(out)),
                        exist_ok=True)
            open(out, 'w').close()

    def elapsed(self):
        return time.perf_counter() - self.start

    def emit(self, record):
        record = {**record, 'elapsed_s': round(self.elapsed(), 1)}
        self.lines.append(record)
        line = json.dumps(record, default=str)
        print(line, flush=True)
        if self.out:
            with open(self.out, 'a') as f:
                f.write(line + '\n')

    def run(self, name, fn, *args):
        """Run one check; its failure is reported, not raised, so that
        the other checks still run."""
        if self.elapsed() > self.budget_s:
            self.emit({'check': name, 'skipped': f'time budget '
                       f'{self.budget_s:.0f} s used up'})
            return None
        if self.only and name not in self.only:
            return None
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            records = fn(*args)
        except Exception as e:  # report and go on
            self.emit({'check': name, 'ok': False,
                       'error': f'{type(e).__name__}: {e}'[:2000],
                       'seconds': time.perf_counter() - t0})
            return None
        took = {'check_seconds': round(time.perf_counter() - t0, 2),
                'check_cpu_seconds': round(time.process_time() - c0, 2)}
        for r in records if isinstance(records, list) else [records]:
            self.emit({'check': name, **r, **took})
        return records


# ----------------------------------------------------------------------
# models and data
# ----------------------------------------------------------------------
def golden_conf():
    """The golden tiny autoencoder's config (tests/golden recipe)."""
    threads = torch.get_num_threads()
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from conftest import conf_from_recipe, load_recipe
    torch.set_num_threads(threads)  # conftest caps the tests at 2
    conf = conf_from_recipe(load_recipe(__import__('pathlib').Path(GOLDEN))
                            ['recipe'])
    conf.name = 'tiny_autoenc'
    return conf


def check_conf(name, workdir, tiny):
    """(conf, official per-GPU batch) of a check model."""
    if tiny:
        conf, per_gpu = golden_conf(), 2
    else:
        conf = getattr(templates, name)()
        per_gpu = conf.batch_size // OFFICIAL_GPUS[name]
    conf.base_dir = os.path.join(workdir, 'checkpoints')
    conf.sample_every_samples = 0
    conf.eval_every_samples = conf.eval_ema_every_samples = 0
    # (worker processes cost more than they give on the tiny model)
    conf.num_workers = 0 if tiny else 2
    conf.sample_size = 4
    return conf, per_gpu


class RandomImages(Dataset):
    """Seeded random images in [-1, 1], as the datasets return them."""

    def __init__(self, n, size):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        img = torch.rand(3, self.size, self.size, generator=g) * 2 - 1
        return {'img': img, 'index': i}


class CheckModel(LitModel):
    """LitModel trained on RandomImages (the check has no dataset)."""

    def setup(self, stage=None):
        super().setup(stage='check')  # seeds only
        self.train_data = self.val_data = RandomImages(
            4 * self.conf.batch_size, self.conf.img_size)


class LossLog(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, i):
        self.losses.append(float(outputs['loss']))  # the check's own read


def accelerator_of(device):
    return ('gpu', [0]) if device.type == 'cuda' else ('cpu', 1)


def fit_steps(conf, device, precision, batch, steps, tag, save=False):
    """Lightning training steps (a checkpoint after the last one when
    ``save``); (record, model, trainer)."""
    conf = conf.clone()
    conf.batch_size = conf.batch_size_eval = batch
    # (a 130M-parameter checkpoint with its Adam state is about 2 GB)
    conf.save_every_samples = batch * steps if save else 10**15
    conf.name = f'{conf.name}_{tag}'
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, log = CheckModel(conf), LossLog()
    # the dtype the UNet computes its output in (the precision at work)
    dtypes = set()
    model.model.register_forward_hook(
        lambda m, inputs, out: dtypes.add(str(out.pred.dtype)))
    accelerator, devices = accelerator_of(device)
    trainer = make_trainer(conf, accelerator, devices, 1, 1, precision,
                           steps, callbacks=[log], enable_progress_bar=False,
                           enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(model)
    scaler = getattr(trainer.precision_plugin, 'scaler', None)
    rec = {'template': conf.name.rsplit('_', 1)[0], 'precision': precision,
           'batch': batch, 'compile': conf.compile and conf.compile_backend,
           'losses': log.losses,
           'ok': len(log.losses) == steps and all(
               np.isfinite(v) for v in log.losses),
           'seconds': time.perf_counter() - t0,
           'grad_scaler': scaler is not None,
           'unet_output_dtypes': sorted(dtypes),
           'pin_memory': trainer.train_dataloader.pin_memory}
    if save:
        rec['checkpoint'] = os.path.join(conf.logdir, 'last.ckpt')
    if device.type == 'cuda':
        rec['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
    return rec, model, trainer


def official_precision(device):
    """The official precision on this device: the templates' conf.fp16
    (16-mixed with a GradScaler) on a GPU, float32 on a CPU (Lightning has
    no float16 autocast there)."""
    return '16-mixed' if device.type == 'cuda' else '32-true'


# ----------------------------------------------------------------------
# the checks
# ----------------------------------------------------------------------
def check_facts(device, args):
    facts = hardware.read_facts('gpu' if device.type == 'cuda' else 'cpu')
    rec = {'device': facts.describe(), 'torch': torch.__version__,
           'cuda': torch.version.cuda, 'tiny': args.tiny,
           'cpu': facts.cpu_name,
           'cpu_native_bf16': hardware.cpu_native_bf16(facts)[0],
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec='seconds')}
    if device.type == 'cuda':
        rec.update(gpu=facts.gpu_name, capability=facts.gpu_capability,
                   visible_gpus=torch.cuda.device_count(),
                   gpu_memory_gib=torch.cuda.get_device_properties(
                       0).total_memory / 2**30,
                   tf32=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    return rec


def check_train(device, args, names, workdir):
    """The official per-GPU batch in the official precision and in
    bf16-mixed, for every check model."""
    out = []
    for name in names:
        conf, per_gpu = check_conf(name, workdir, args.tiny)
        for precision in (official_precision(device), 'bf16-mixed'):
            rec = fit_steps(conf, device, precision, per_gpu, args.steps,
                            precision.replace('-', ''))[0]
            # bf16-mixed computes in bf16 also where conf.fp16 is set
            want = {'16-mixed': 'torch.float16', '32-true': 'torch.float32',
                    'bf16-mixed': 'torch.bfloat16'}[precision]
            rec['ok'] = rec['ok'] and rec['unet_output_dtypes'] == [want]
            out.append(rec)
    return out


@torch.no_grad()
def golden_render(model, sampler, io, device):
    return sampler.sample(model.to(device), noise=io['x_T'].to(device),
                          cond=io['cond'].to(device)).cpu()


def check_render(device):
    """DDIM T=10 of the golden tiny model here against the official CPU
    render, TF32 off; with TF32 on, the difference is reported and the
    conf.compile render is compared with the eager one."""
    conf = golden_conf()
    io = checkpoint_io.load_checkpoint(os.path.join(GOLDEN, 'io.pt'))
    ckpt = os.path.join(GOLDEN, 'last.ckpt')
    ema = DiffAE.from_checkpoint(conf, ckpt).ema_model
    sampler = conf._make_diffusion_conf(10).make_sampler()
    cpu = golden_render(ema, sampler, io, torch.device('cpu'))
    conf.compile, conf.compile_backend = True, compile_backend(device)
    compiled = DiffAE.from_checkpoint(conf, ckpt).ema_model
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        hardware.configure_gpu_math(False, torch.backends.cudnn.benchmark)
        here = golden_render(ema, sampler, io, device)
        hardware.configure_gpu_math(True, torch.backends.cudnn.benchmark)
        tf32 = golden_render(ema, sampler, io, device)
        graphs = counters['stats']['unique_graphs']
        comp = golden_render(compiled, sampler, io, device)
        graphs = counters['stats']['unique_graphs'] - graphs
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
    diff = {'max_abs_vs_official_cpu': (here - io['render_T10']).abs().max(),
            'max_abs_vs_this_cpu': (here - cpu).abs().max(),
            'max_abs_tf32_vs_official_cpu':
                (tf32 - io['render_T10']).abs().max(),
            'max_abs_compiled_vs_eager': (comp - tf32).abs().max()}
    diff = {k: v.item() for k, v in diff.items()}
    return {'T': 10, 'atol': GOLDEN_ATOL, **diff,
            'compiled_backend': conf.compile_backend,
            'compiled_graphs': graphs,
            'ok': graphs > 0 and all(
                diff[k] <= GOLDEN_ATOL for k in (
                    'max_abs_vs_official_cpu', 'max_abs_vs_this_cpu',
                    'max_abs_compiled_vs_eager'))}


def same_state(a, b):
    """Max abs difference over two state dicts with the same keys."""
    if set(a) != set(b):
        return float('inf')
    return max(((a[k].detach().cpu().float() - b[k].detach().cpu().float())
                .abs().max().item() for k in a
                if a[k].is_floating_point()), default=0.0)


def check_checkpoint(device, workdir):
    """Written on the device -> loaded on the CPU, and the reverse."""
    conf, batch = check_conf('tiny', workdir, True)
    out = []
    for written, load_on in ((device, torch.device('cpu')),
                             (torch.device('cpu'), device)):
        rec, model, _ = fit_steps(conf, written, '32-true', batch, 1,
                                  f'ckpt_{written.type}', save=True)
        loaded = LitModel.from_checkpoint(
            conf.clone(), rec['checkpoint'], map_location=load_on)
        state = loaded.state_dict()
        on = {t.device.type for t in state.values()}
        diff = same_state(checkpoint_io.load_checkpoint(
            rec['checkpoint'])['state_dict'], state)
        # the trained weights as they were in memory (the EMA copy is
        # left out: Lightning saves before the module's batch-end hook)
        trained = {k: v for k, v in model.state_dict().items()
                   if k.startswith('model.')}
        vs_memory = same_state(trained, {k: state[k] for k in trained})
        out.append({'written_on': written.type, 'loaded_on': load_on.type,
                    'tensors_on': sorted(on), 'max_abs_diff_vs_file': diff,
                    'max_abs_diff_model_vs_memory': vs_memory,
                    'ok': diff == 0 and vs_memory == 0 and
                    on == {load_on.type}})
    return out


def write_images(folder, n, size):
    """n seeded random PNGs (the ddp check's data_name='imagefolder')."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)
                        ).save(os.path.join(folder, f'{i:03d}.png'))


class BackendLog(pl.Callback):
    """Each process writes its world size and process-group backend."""

    def __init__(self, folder):
        self.folder = folder

    def on_train_start(self, trainer, module):
        dist = torch.distributed
        backend = dist.get_backend() if dist.is_initialized() else None
        with open(os.path.join(self.folder,
                               f'rank{trainer.global_rank}.json'), 'w') as f:
            json.dump({'world': trainer.world_size, 'backend': backend}, f)


def ddp_worker(folder, gpus):
    """What each torchrun process runs: train() for two steps."""
    conf, per_gpu = check_conf('tiny', folder, True)
    conf.data_name, conf.data_dir = 'imagefolder', os.path.join(folder,
                                                                'images')
    conf.num_workers = 0
    conf.batch_size = per_gpu * max(1, len(gpus))
    conf.save_every_samples = conf.batch_size
    conf.name = 'ddp'
    train(conf, gpus=gpus or [0], max_steps=2,
          accelerator=None if gpus else 'cpu',
          callbacks=[BackendLog(folder)], enable_progress_bar=False,
          enable_model_summary=False)
    if gpus and len(gpus) == 1 and 'LOCAL_RANK' in os.environ:
        # one GPU: train() runs one process without a process group, so
        # NCCL itself is checked by a one-rank all-reduce
        dist = torch.distributed
        dist.init_process_group('nccl', device_id=torch.device('cuda', 0))
        x = torch.ones(4, device='cuda')
        dist.all_reduce(x)
        with open(os.path.join(folder, 'nccl.json'), 'w') as f:
            json.dump({'all_reduce_ok': bool((x == 1).all())}, f)
        dist.destroy_process_group()


def check_ddp(device, tiny, workdir):
    """train() under torchrun over NCCL (in this process with --tiny on
    the CPU): two steps, one last.ckpt."""
    folder = os.path.join(workdir, 'ddp')
    write_images(os.path.join(folder, 'images'), 16, 32)
    rec = {}
    if device.type == 'cuda':
        n = torch.cuda.device_count()
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               f'--nproc-per-node={n}', os.path.abspath(__file__),
               '--ddp-worker', folder]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=300)
        rec.update(command=' '.join(cmd[1:]), returncode=proc.returncode,
                   seconds=time.perf_counter() - t0,
                   log_tail=(proc.stdout + proc.stderr)[-1500:])
    else:
        rec['torchrun'] = ('not run on the CPU: two gloo processes take '
                           'about a minute on 2 shared cores; train() ran '
                           'in this process (tests/test_training.py '
                           'covers gloo DDP)')
        ddp_worker(folder, [])
    ckpts = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
             if f == 'last.ckpt']
    ranks = [json.load(open(os.path.join(folder, f)))
             for f in sorted(os.listdir(folder)) if f.startswith('rank')]
    steps = [checkpoint_io.load_checkpoint(p)['global_step'] for p in ckpts]
    rec.update(last_ckpts=len(ckpts), global_steps=steps, processes=ranks)
    if os.path.exists(os.path.join(folder, 'nccl.json')):
        rec['nccl_one_rank'] = json.load(open(os.path.join(folder,
                                                           'nccl.json')))
    rec['ok'] = (len(ckpts) == 1 and steps == [2] and
                 rec.get('returncode', 0) == 0)
    return rec


def check_compile(device, args, workdir):
    """Eager and conf.compile Lightning runs of the tiny model: finite,
    the same losses, official checkpoint keys."""
    conf, batch = check_conf('tiny', workdir, True)
    precision = official_precision(device)
    eager = fit_steps(conf, device, precision, batch, args.steps, 'eager',
                      save=True)
    conf.compile, conf.compile_backend = True, compile_backend(device)
    graphs = counters['stats']['unique_graphs']
    comp = fit_steps(conf, device, precision, batch, args.steps, 'compiled',
                     save=True)
    graphs = counters['stats']['unique_graphs'] - graphs
    keys = set(checkpoint_io.load_checkpoint(
        comp[0]['checkpoint'])['state_dict'])
    official = set(eager[1].state_dict())
    a, b = np.array(eager[0]['losses']), np.array(comp[0]['losses'])
    rel = float(np.max(np.abs(a - b) / np.abs(a))) if len(a) == len(b) \
        else float('inf')
    # float16 autocast with fused kernels rounds differently; float32
    # through aot_eager computes the same operations
    tol = 1e-2 if precision == '16-mixed' else 1e-5
    return {'backend': conf.compile_backend, 'precision': precision,
            'eager_losses': eager[0]['losses'],
            'compiled_losses': comp[0]['losses'],
            'max_rel_loss_diff': rel, 'tolerance': tol,
            'compiled_fit_seconds': comp[0]['seconds'],
            'eager_fit_seconds': eager[0]['seconds'],
            'graphs_compiled': graphs, 'checkpoint': comp[0]['checkpoint'],
            'keys_official': keys == official,
            'orig_mod_keys': sorted(k for k in keys if '_orig_mod' in k),
            'ok': comp[0]['ok'] and keys == official and rel <= tol and
            graphs > 0}


def compile_backend(device):
    """inductor on a GPU; on the CPU (the dry-run) aot_eager: the same
    graph capture without inductor's slow C++ code generation."""
    return 'aot_eager' if device.type == 'cpu' else 'inductor'


def speed_argv(name, per_gpu, device, tiny, modes, extra=(),
               skip='encode'):
    if tiny:
        base = ['--batch', '2', '--T', '2', '--steps', '1', '--repeats',
                '1', '--no-peak']
    else:
        base = ['--template', name, '--batch', str(per_gpu), '--T', '10',
                '--steps', '3', '--repeats', '3']
    return base + ['--modes', modes, '--skip', skip, '--device',
                   device.type, *extra]


def check_speed(device, args, names, workdir, compile_=False):
    """bench/train_step.py for every check model: the reference's
    computation (fp32, and fp16 on a GPU), the project's default (auto:
    fast16 for the official templates' conf.fp16) and bf16, or one of
    them + conf.compile."""
    out = []
    for name in names:
        conf, per_gpu = check_conf(name, workdir, args.tiny)
        if compile_ and args.tiny:
            # the training graph the compile check compiled (float32,
            # batch 2): the dry-run runs the code without a second compile
            argv = speed_argv(name, per_gpu, device, True, 'fast32',
                              ['--compile', '--compile-backend',
                               compile_backend(device)], 'encode,render')
        elif compile_:
            # the fastest candidate: bf16 where the GPU computes it natively
            bf16 = torch.cuda.get_device_capability(0) >= (8, 0)
            argv = speed_argv(name, per_gpu, device, False,
                              'bf16' if bf16 else 'auto',
                              ['--compile', '--compile-backend',
                               compile_backend(device)])
        else:
            argv = speed_argv(name, per_gpu, device, args.tiny,
                              'fp32,auto' if args.tiny else
                              'fp32,fp16,auto,bf16')
        results = train_step.main(argv, conf=conf if args.tiny else None)
        for mode, r in results.items():
            out.append({'mode': mode, 'argv': ' '.join(argv), **r})
    return out


def batch_search(conf, device, precision, start, limit):
    """The largest per-GPU batch whose training step (forward, backward,
    Adam, EMA) fits, by hardware.largest_batch."""
    conf = conf.clone()
    conf.batch_size = start
    lit = LitModel(conf).to(device)
    opt = torch.optim.Adam(lit.model.parameters(), lr=conf.lr)
    dtype = {'bf16-mixed': torch.bfloat16, '16-mixed': torch.float16}.get(
        precision)

    def step(batch):
        opt.zero_grad(set_to_none=True)  # also after an out-of-memory
        x = torch.randn(batch, 3, conf.img_size, conf.img_size,
                        device=device)
        t = torch.randint(0, conf.T, (batch, ), device=device)
        with torch.autocast(device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss = lit.sampler.training_losses(lit.model, x, t)['loss']
        loss.mean().backward()
        opt.step()
        if device.type == 'cuda':
            torch.cuda.synchronize()

    # (the model is freed on return; fit_steps empties the CUDA cache)
    return hardware.largest_batch(step, start, limit)


def check_batch(device, args, names, workdir):
    """The largest per-GPU batch of every check model in the precision
    train() picks here, and Lightning steps at it."""
    out = []
    accelerator = accelerator_of(device)[0]
    limit = 4 if args.tiny else args.batch_limit
    for name in names:
        conf, per_gpu = check_conf(name, workdir, args.tiny)
        precision = hardware.choose_precision(conf.precision, conf.fp16,
                                              accelerator)[0]
        best, tried = batch_search(conf, device, precision, per_gpu, limit)
        rec = {'template': name, 'precision': precision,
               'official_per_gpu': per_gpu, 'largest': best,
               'tried': tried, 'limit': limit}
        if best is not None:
            fit = fit_steps(conf, device, precision, best, args.steps,
                            'largest')[0]
            rec.update(losses=fit['losses'], ok=fit['ok'],
                       seconds=fit['seconds'],
                       peak_memory_gib=fit.get('peak_memory_gib'))
        else:
            rec['ok'] = False
        out.append(rec)
    return out


def suggest_accum(global_batch, gpus, per_gpu):
    """(conf.batch_size, conf.accum_batches) that keep the official global
    batch with ``gpus`` GPUs of at most ``per_gpu`` images each."""
    for accum in range(1, global_batch + 1):
        batch = global_batch // accum
        if global_batch % accum == 0 and batch % gpus == 0 and \
                batch // gpus <= per_gpu:
            return batch, accum
    return None, None


def find_batch(device, args, workdir, report):
    """--find-batch TEMPLATE: the largest per-GPU batch here, and the
    batch_size / accum_batches that keep the official global batch."""
    name = args.find_batch
    conf = getattr(templates, name)()
    accelerator = accelerator_of(device)[0]
    precision = hardware.choose_precision(conf.precision, conf.fp16,
                                          accelerator)[0]
    gpus = max(1, torch.cuda.device_count())
    start = max(1, conf.batch_size // OFFICIAL_GPUS.get(name, gpus))
    best, tried = batch_search(conf, device, precision, start,
                               args.batch_limit)
    batch, accum = (suggest_accum(conf.batch_size, gpus, best)
                    if best else (None, None))
    report.emit({'check': 'find_batch', 'template': name,
                 'precision': precision, 'largest_per_gpu': best,
                 'tried': tried, 'official_global_batch': conf.batch_size,
                 'gpus': gpus, 'suggest_batch_size': batch,
                 'suggest_accum_batches': accum})
    if batch:
        print(f'\n{name} on {gpus} x {check_facts(device, args)["device"]}'
              f' in {precision}: at most {best} images per GPU. Keep the '
              f'official global batch {conf.batch_size} with:\n'
              f'    conf.batch_size = {batch}; conf.accum_batches = {accum}')


def speed_lines(lines):
    """Training img/s per GPU by (template, mode) from the speed checks."""
    rates = {}
    for r in lines:
        if r['check'] in ('speed', 'speed_compile') and 'train' in r:
            mode = r['mode'] + ('+compile' if r.get('compile') else '')
            rates[(r['template'], mode)] = (
                r['train']['img_per_s_median'],
                r.get('render', {}).get('img_per_s_median'))
    return rates


def summary(report):
    """A few human lines at the end: what passed, the speed figures
    against the reference's computation and the published anchors."""
    lines = report.lines
    print('\n=== gpu_check summary ===')
    facts = next((r for r in lines if r['check'] == 'facts'), {})
    print(f"device: {facts.get('device')}  torch {facts.get('torch')}  "
          f"CUDA {facts.get('cuda')}  ({facts.get('date')})")
    for r in lines:
        if 'ok' in r or 'skipped' in r:
            what = r.get('skipped') or ('ok' if r['ok'] else 'FAILED ' +
                                        r.get('error', ''))
            print(f"  {r['check']:<14} {r.get('template', ''):<22} "
                  f"{r.get('precision', '')}: {what}")
    rates = speed_lines(lines)
    for (template, mode), (train_rate, render_rate) in sorted(rates.items()):
        ref = rates.get((template, 'fp16')) or rates.get((template, 'fp32'))
        ratio = f'{train_rate / ref[0]:.2f}x the reference' if ref else ''
        print(f'  speed {template:<22} {mode:<13} train {train_rate:8.1f} '
              f'img/s per device {ratio}; render '
              f'{render_rate or float("nan"):.1f} img/s')
    best = max((v[0] for (t, m), v in rates.items()
                if t == 'ffhq128_autoenc_130M' and m not in ('fp32', 'fp16')),
               default=None)
    ref = rates.get(('ffhq128_autoenc_130M', 'fp16'))
    if best and ref:
        print(f'  128 px: best project path {best:.1f} img/s = '
              f'{best / ref[0]:.2f}x the reference (fp16, NCHW, einsum '
              'attention; goal >= 2x); anchors per GPU: ' + ', '.join(
                  f'{k} {v}' for k, v in ANCHORS.items()))
    failed = [r['check'] for r in lines if r.get('ok') is False]
    print('all checks passed' if not failed else f'FAILED: {failed}')
    return not failed


def default_out(device, tiny):
    if tiny or device.type != 'cuda':
        return None
    gpu = ''.join(c if c.isalnum() else '_' for c in
                  torch.cuda.get_device_name(0)).strip('_')
    day = datetime.date.today().isoformat()
    return os.path.join(HERE, 'results', f'gpu_check_{gpu}_{day}.jsonl')


def main(argv=None):
    args = parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args.ddp_worker,
                          list(range(torch.cuda.device_count())))
    device = torch.device(args.device)
    if args.tiny and device.type == 'cpu':
        # the tiny model gains nothing from a second thread, and idle
        # OpenMP threads spin: on a busy 2-core machine one fit of it
        # measured 20.8 s of CPU with 2 threads, 2.5 s with one
        torch.set_num_threads(1)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA GPU is visible here (use '
                         '--device cpu --tiny for the dry-run)')
    if device.type == 'cuda':
        # what train() sets on a GPU (conf.tf32, conf.cudnn_benchmark)
        hardware.configure_gpu_math(True, True)
    workdir = args.workdir or tempfile.mkdtemp(prefix='gpu_check_')
    report = Report(args.out or default_out(device, args.tiny),
                    args.budget_s, [c for c in args.only.split(',') if c])
    if args.find_batch:
        return find_batch(device, args, workdir, report)
    names = ['tiny'] if args.tiny else list(OFFICIAL_GPUS)
    report.run('facts', check_facts, device, args)
    report.run('train', check_train, device, args, names, workdir)
    report.run('render', check_render, device)
    report.run('checkpoint', check_checkpoint, device, workdir)
    report.run('ddp', check_ddp, device, args.tiny, workdir)
    report.run('compile', check_compile, device, args, workdir)
    # one model per check, so that the budget can skip the later ones
    for name in names:
        report.run('speed', check_speed, device, args, [name], workdir)
    report.run('speed_compile', check_speed, device, args, names[:1],
               workdir, True)
    report.run('batch', check_batch, device, args, names, workdir)
    for name in names[1:]:
        report.run('speed_compile', check_speed, device, args, [name],
                   workdir, True)
    ok = summary(report)
    if report.out:
        print(f'JSON lines: {report.out}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

"""The GPU path, checked on the CPU: the training step's non-finite
watch never reads the device, the GPU math settings (TF32,
cudnn.benchmark) and their opt-out."""
import pytest
import torch


def test_nonfinite_watch_never_reads_the_loss_on_the_host():
    from experiment import NonFiniteWatch
    watch = NonFiniteWatch()
    # a meta tensor has no data: any host read (bool, item, int) raises
    loss = torch.tensor(float('nan'), device='meta')
    with pytest.raises(Exception):
        bool(torch.isfinite(loss))  # what a per-step check would do
    for step in range(3):
        watch.note(loss, step)
    assert watch.step.device.type == 'meta'


def test_nonfinite_watch_keeps_the_first_bad_step():
    from experiment import NonFiniteWatch
    watch = NonFiniteWatch()
    for step, value in enumerate([1.0, 2.0, float('inf'), 0.5,
                                  float('nan')]):
        watch.note(torch.tensor(value), step)
    assert watch.first_bad() == (2, float('inf'))


def test_nonfinite_watch_is_silent_while_losses_are_finite():
    from experiment import NonFiniteWatch
    watch = NonFiniteWatch()
    for step in range(4):
        watch.note(torch.tensor(0.1 * step), step)
    assert watch.first_bad() == (None, None)


@pytest.fixture
def restore_cuda_math():
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark) = saved


def test_gpu_math_default_is_tf32_and_cudnn_benchmark(restore_cuda_math):
    import hardware
    from config import TrainConfig
    conf = TrainConfig()
    hardware.configure_gpu_math(conf.tf32, conf.cudnn_benchmark)
    assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.benchmark
    # what Lightning reads on Ampere GPUs must still answer
    assert torch.get_float32_matmul_precision() == 'high'


def test_gpu_math_opt_out_keeps_full_float32(restore_cuda_math):
    import hardware
    hardware.configure_gpu_math(tf32=False, benchmark=False)
    assert not torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cudnn.benchmark
    assert torch.get_float32_matmul_precision() == 'highest'


def oom_above(threshold, calls):
    def step(batch):
        calls.append(batch)
        if batch > threshold:
            raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
    return step


def test_largest_batch_doubles_then_bisects():
    import hardware
    calls = []
    # 4, 8, 16 fit; 32 does not; bisection: 24 no, 20 yes
    best, tried = hardware.largest_batch(oom_above(23, calls), 4, 1024)
    assert best == 20
    assert calls == [4, 8, 16, 32, 24, 20]
    assert tried[3] == (32, False)


def test_largest_batch_halves_when_the_start_does_not_fit():
    import hardware
    calls = []
    best, _ = hardware.largest_batch(oom_above(3, calls), 8, 64)
    # 8 and 4 fail, 2 fits; bisection between 2 and 4: 3 fits
    assert (best, calls) == (3, [8, 4, 2, 3])


def test_largest_batch_stops_at_the_limit():
    import hardware
    calls = []
    best, _ = hardware.largest_batch(oom_above(10**6, calls), 2, 16)
    assert (best, calls) == (16, [2, 4, 8, 16])


# conf.compile and the GPU check's dry-run. The compile checks use
# torch.compile's 'aot_eager' backend on the CPU (Dynamo's graph capture
# and AOTAutograd's forward/backward graphs, run without code generation):
# inductor adds C++ generation and gcc compilation of every fused kernel,
# forward and backward, on top of that capture (an earlier session
# measured 72 s for one compile of celeba64's forward, docs/performance.md),
# too much for this suite's budget; inductor is timed by
# bench/compile_cpu.py and on GPUs by bench/gpu_check.py. One dry-run
# serves the tests below.
@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """bench/gpu_check.py --device cpu --tiny, run once: (returncode,
    {check: [records]}, output)."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    work = tmp_path_factory.mktemp('gpu_check')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), '--device',
         'cpu', '--tiny', '--budget-s', '100000', '--workdir', str(work),
         '--out', str(work / 'out.jsonl')],
        capture_output=True, text=True, timeout=900, cwd=work)
    records = {}
    out = work / 'out.jsonl'
    for line in (out.read_text().splitlines() if out.exists() else []):
        r = json.loads(line)
        records.setdefault(r['check'], []).append(r)
    return proc.returncode, records, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_gpu_check_dry_run_passes_every_check(dry_run):
    """The GPU check's code runs on the CPU (so it cannot rot before a GPU
    appears) and every check passes."""
    returncode, records, output = dry_run
    assert set(records) == {'facts', 'train', 'render', 'checkpoint', 'ddp',
                            'compile', 'speed', 'batch',
                            'speed_compile'}, output
    failed = [r for rs in records.values() for r in rs
              if r.get('ok') is False or 'skipped' in r]
    assert not failed, failed
    assert returncode == 0, output


def test_compiled_training_gives_the_eager_losses(dry_run):
    (compiled, ) = dry_run[1]['compile']
    assert compiled['graphs_compiled'] > 0  # it did compile
    assert compiled['compiled_losses'] == pytest.approx(
        compiled['eager_losses'], rel=1e-5, abs=1e-6)
    assert len(set(compiled['eager_losses'])) == len(
        compiled['eager_losses'])  # the steps trained


def test_compiled_run_saves_the_official_checkpoint_keys(dry_run):
    import checkpoint_io
    from conftest import conf_from_recipe, golden, load_recipe
    from experiment import LitModel
    (compiled, ) = dry_run[1]['compile']
    saved = checkpoint_io.load_checkpoint(compiled['checkpoint'])
    conf = conf_from_recipe(load_recipe(golden('tiny_autoenc'))['recipe'])
    official = set(LitModel(conf).state_dict())
    assert set(saved['state_dict']) == official
    assert any(k.startswith('ema_model.') for k in official)


def test_compiled_sampling_renders_the_eager_images(dry_run):
    (render, ) = dry_run[1]['render']
    assert render['compiled_graphs'] > 0
    assert render['max_abs_compiled_vs_eager'] <= 1e-6


def test_an_unknown_compile_backend_names_the_setting():
    import hardware
    with pytest.raises(ValueError, match='conf.compile_backend'):
        hardware.compile_in_place(torch.nn.Linear(2, 2), 'no_such_backend')

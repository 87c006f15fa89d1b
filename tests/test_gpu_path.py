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

"""What this machine runs fastest: the hardware facts it reports, and the
training precision chosen from them (``conf.precision = 'auto'``).

bf16 autocast is the fast path only where the hardware computes bf16
natively: GPUs of compute capability 8.0+ (Ampere, Hopper, ...) and CPUs
with AVX512_BF16 or AMX-BF16. Elsewhere bf16 is emulated (on a CPU without
those instructions a training step measured 2-5x slower than float32), so
'auto' picks float32 there. The decision reads the CPU flags (Linux
``/proc/cpuinfo``); where no flags can be read it times a short bf16 vs
float32 probe once and caches the answer.
"""
import json
import os
import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import torch

# CPU flags (as Linux names them) that mean native bf16 arithmetic
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which oneDNN still uses bf16
# instructions; a lower cap (e.g. AVX512_CORE_VNNI, AVX2) emulates bf16
ONEDNN_BF16_ISAS = ('AVX512_CORE_BF16', 'AVX512_CORE_AMX', 'AVX10_1_512',
                    'AVX10_1_512_AMX', 'AVX512_CORE_AMX_FP16',
                    'AVX10_1_512_AMX_FP16', 'AVX10_2_512',
                    'AVX10_2_512_AMX_2', 'DEFAULT', 'ALL')
PROBE_CACHE = Path(os.environ.get('DIFFAE_CACHE_DIR',
                                  Path.home() / '.cache' / 'diffae')) / \
    'bf16_probe.json'


@dataclass(frozen=True)
class HardwareFacts:
    """What the machine reports; everything the precision choice reads."""
    accelerator: str                     # 'gpu' or 'cpu'
    cpu_name: str = ''
    # None: the flags could not be read (not Linux)
    cpu_flags: Optional[frozenset] = None
    # ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, if the user capped oneDNN
    onednn_isa_cap: Optional[str] = None
    gpu_name: str = ''
    gpu_capability: Optional[Tuple[int, int]] = None
    # measured bf16/float32 speed ratio of the probe (only when flags are
    # unknown); > 1 means bf16 is faster
    probe_ratio: Optional[float] = field(default=None, compare=False)

    def describe(self) -> str:
        if self.accelerator == 'gpu':
            cap = '.'.join(map(str, self.gpu_capability or ()))
            return f'{self.gpu_name} (compute capability {cap})'
        return self.cpu_name or platform.processor() or 'unknown CPU'


@lru_cache(maxsize=1)
def _cpuinfo() -> Tuple[str, Optional[frozenset]]:
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor(), None
    name, flags = '', None
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not name:
            name = value.strip()
        elif key in ('flags', 'Features') and flags is None:
            flags = frozenset(value.split())
    return name or platform.processor(), flags


def read_facts(accelerator: str) -> HardwareFacts:
    """The facts of this machine for ``accelerator`` ('gpu' or 'cpu')."""
    name, flags = _cpuinfo()
    cap = (os.environ.get('ONEDNN_MAX_CPU_ISA')
           or os.environ.get('DNNL_MAX_CPU_ISA') or None)
    if accelerator == 'gpu' and torch.cuda.is_available():
        return HardwareFacts('gpu', name, flags, cap,
                             torch.cuda.get_device_name(0),
                             torch.cuda.get_device_capability(0))
    return HardwareFacts('cpu', name, flags, cap)


def cpu_native_bf16(facts: HardwareFacts) -> Tuple[Optional[bool], str]:
    """(native bf16?, why); None when the flags say nothing."""
    if facts.cpu_flags is None:
        return None, 'CPU flags unreadable on this system'
    have = [f for f in NATIVE_BF16_FLAGS if f in facts.cpu_flags]
    if not have:
        return False, ('CPU has no native bf16 (no AVX512_BF16, no AMX): '
                       'bf16 would be emulated')
    cap = facts.onednn_isa_cap
    if cap and cap.upper() not in ONEDNN_BF16_ISAS:
        return False, (f'CPU has {"/".join(have).upper()} but '
                       f'ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from using '
                       'it')
    return True, f'CPU has native bf16 ({"/".join(have).upper()})'


def probe_cpu_bf16(seconds: float = 0.5, cache: Path = PROBE_CACHE) -> float:
    """bf16/float32 speed ratio of a small convolution on this CPU, timed
    once and cached per CPU and torch version (> 1: bf16 faster)."""
    key = f'{_cpuinfo()[0]}|{platform.machine()}|torch {torch.__version__}'
    try:
        cached = json.loads(cache.read_text())
        if key in cached:
            return float(cached[key])
    except (OSError, ValueError):
        cached = {}
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 32, 32)

    def rate(dtype):
        with torch.no_grad(), torch.autocast('cpu', dtype=dtype,
                                             enabled=dtype != torch.float32):
            conv(x)  # warm-up (kernel selection)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                conv(x)
                n += 1
        return n / (time.perf_counter() - start)

    ratio = rate(torch.bfloat16) / rate(torch.float32)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cached[key] = ratio
        cache.write_text(json.dumps(cached, indent=1))
    except OSError:
        pass  # an unwritable cache only costs the probe next time
    return ratio


def auto_precision(facts: HardwareFacts, fp16: bool = False,
                   probe=probe_cpu_bf16) -> Tuple[str, str]:
    """(Lightning precision, reason) that ``facts`` run fastest.

    GPU: the official ``conf.fp16`` asks for '16-mixed'; else bf16-mixed
    from compute capability 8.0 on, float32 before. CPU: bf16-mixed with
    native bf16, float32 without (``conf.fp16`` is a GPU setting: float16
    autocast is not a CPU fast path)."""
    if facts.accelerator == 'gpu':
        if fp16:
            return '16-mixed', (f'conf.fp16=True on {facts.describe()} '
                                '(as the official code)')
        if facts.gpu_capability and facts.gpu_capability >= (8, 0):
            return 'bf16-mixed', (f'{facts.describe()} computes bf16 '
                                  'natively')
        return '32-true', (f'{facts.describe()} has no native bf16 and '
                           'conf.fp16 is off')
    native, why = cpu_native_bf16(facts)
    if native is None:
        ratio = facts.probe_ratio if facts.probe_ratio is not None \
            else probe()
        native = ratio > 1.1
        why = (f'{why}; a timed probe ran bf16 at {ratio:.2f}x float32 '
               f'speed')
    return ('bf16-mixed' if native else '32-true'), \
        f'{why} on {facts.describe()}'


def choose_precision(conf_precision: Optional[str], fp16: bool,
                     accelerator: str, precision: Optional[str] = None,
                     facts: Optional[HardwareFacts] = None
                     ) -> Tuple[str, str]:
    """(Lightning precision, reason) for a run: an explicit ``precision``
    argument wins, then ``conf.precision`` unless it is 'auto' (or None),
    then what the hardware runs fastest (``auto_precision``)."""
    if precision and precision != 'auto':
        return precision, f'precision={precision!r} was passed to train()'
    if conf_precision and conf_precision != 'auto':
        return conf_precision, f'conf.precision={conf_precision!r}'
    facts = facts or read_facts(accelerator)
    chosen, why = auto_precision(facts, fp16)
    return chosen, f"conf.precision='auto': {why}"


def prefers_channels_last(device_type: str) -> bool:
    """Whether the UNet's convolutions run faster in NHWC (channels_last)
    on ``device_type``. Measured (celeba64 UNet forward, batch 8, 2-core
    AMD EPYC, oneDNN): float32 0.65 s NHWC vs 0.72 s NCHW, bf16 0.36 vs
    0.41 s, float32 with oneDNN capped below bf16 (as on a CPU without
    native bf16) 0.61 vs 0.74 s; cuDNN's autocast kernels are NHWC too.
    Other devices (e.g. mps): not measured, left NCHW."""
    return device_type in ('cpu', 'cuda')


def configure_gpu_math(tf32: bool = True, benchmark: bool = True) -> str:
    """Process-wide CUDA math settings of a training run (``conf.tf32``,
    ``conf.cudnn_benchmark``); returns what was set, for the log.

    TF32 runs float32 matmuls and convolutions on the tensor cores of
    Ampere and later GPUs (10-bit mantissa products, float32 sums); older
    GPUs and CPUs ignore it. The legacy ``allow_tf32`` switches are used
    on purpose: Lightning reads ``torch.get_float32_matmul_precision()``,
    which raises once the newer ``fp32_precision`` API was mixed in."""
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = bool(benchmark)
    return (f'GPU math: TF32 matmul/conv {"on" if tf32 else "off"} '
            f'(conf.tf32), cudnn.benchmark {"on" if benchmark else "off"} '
            '(conf.cudnn_benchmark)')


def compile_in_place(module: torch.nn.Module, backend: str = 'inductor',
                     children=('latent_net', )) -> torch.nn.Module:
    """``torch.compile`` of ``module``'s forward, and of its ``children``
    that exist (they are called on their own: the latent DPM trains and
    samples through ``model.latent_net``), in place: parameter and buffer
    names are unchanged, so state dicts keep their keys. Compiles lazily,
    at the first call."""
    targets = [module] + [getattr(module, name) for name in children
                          if isinstance(getattr(module, name, None),
                                        torch.nn.Module)]
    for target in targets:
        try:
            target.compile(backend=backend)
        except Exception as e:  # an unknown backend name, mostly
            raise ValueError(f'conf.compile_backend={backend!r} cannot be '
                             f'used by torch.compile: {e}') from e
    return module


def largest_batch(step, start: int, limit: int, refine: int = 2):
    """The largest batch for which ``step(batch)`` (a training step) runs
    without running out of GPU memory: doubling from ``start`` up to
    ``limit`` (halving first when ``start`` does not fit), then ``refine``
    bisection steps between the last batch that fit and the first that
    did not. Returns (batch or None, [(batch, fitted), ...] in the order
    tried). For a GPU smaller than the official run's, train at this
    per-GPU batch and raise ``conf.accum_batches`` (README, On GPUs)."""
    tried = []

    def fits(batch):
        try:
            step(batch)
            ok = True
        except torch.OutOfMemoryError:
            ok = False
        if not ok and torch.cuda.is_available():
            torch.cuda.empty_cache()
        tried.append((batch, ok))
        return ok

    lo = hi = None
    if fits(start):
        lo = start
        while lo * 2 <= limit and fits(lo * 2):
            lo *= 2
        if lo * 2 <= limit:
            hi = lo * 2
    else:
        hi = start
        while hi > 1 and lo is None:
            if fits(hi // 2):
                lo = hi // 2
            else:
                hi //= 2
        if lo is None:
            return None, tried
    for _ in range(refine):
        if hi is None or hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried

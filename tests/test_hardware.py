"""The precision choice ('auto') from faked hardware facts: one case each."""
import logging

import pytest

import hardware
from hardware import HardwareFacts, auto_precision, choose_precision

XEON_NO_BF16 = HardwareFacts(
    'cpu', 'Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz',
    frozenset({'avx2', 'avx512f', 'avx512bw', 'avx512_vnni'}))
EPYC_BF16 = HardwareFacts(
    'cpu', 'AMD EPYC 9R14', frozenset({'avx2', 'avx512f', 'avx512_bf16'}))
XEON_AMX = HardwareFacts(
    'cpu', 'Intel(R) Xeon(R) Platinum 8488C',
    frozenset({'avx512f', 'amx_bf16', 'amx_tile'}))
H100 = HardwareFacts('gpu', gpu_name='NVIDIA H100', gpu_capability=(9, 0))
V100 = HardwareFacts('gpu', gpu_name='Tesla V100', gpu_capability=(7, 0))


def never_probe():
    raise AssertionError('the probe must not run when the flags are known')


def test_cpu_without_native_bf16_picks_float32():
    chosen, why = auto_precision(XEON_NO_BF16, probe=never_probe)
    assert chosen == '32-true'
    assert 'no native bf16' in why and 'Xeon' in why


@pytest.mark.parametrize('facts', [EPYC_BF16, XEON_AMX],
                         ids=['avx512_bf16', 'amx'])
def test_cpu_with_native_bf16_picks_bf16(facts):
    chosen, why = auto_precision(facts, probe=never_probe)
    assert chosen == 'bf16-mixed'
    assert 'native bf16' in why


def test_fp16_flag_is_not_a_cpu_fast_path():
    assert auto_precision(XEON_NO_BF16, fp16=True,
                          probe=never_probe)[0] == '32-true'
    assert auto_precision(EPYC_BF16, fp16=True,
                          probe=never_probe)[0] == 'bf16-mixed'


def test_onednn_isa_cap_below_bf16_counts_as_emulated():
    capped = HardwareFacts('cpu', EPYC_BF16.cpu_name, EPYC_BF16.cpu_flags,
                           onednn_isa_cap='AVX512_CORE_VNNI')
    chosen, why = auto_precision(capped, probe=never_probe)
    assert chosen == '32-true' and 'ONEDNN_MAX_CPU_ISA' in why
    amx_cap = HardwareFacts('cpu', XEON_AMX.cpu_name, XEON_AMX.cpu_flags,
                            onednn_isa_cap='avx512_core_amx')
    assert auto_precision(amx_cap, probe=never_probe)[0] == 'bf16-mixed'


@pytest.mark.parametrize('ratio,want', [(2.4, 'bf16-mixed'),
                                        (0.35, '32-true')])
def test_unknown_flags_use_the_timed_probe(ratio, want):
    facts = HardwareFacts('cpu', 'Apple M2', None)
    calls = []

    def probe():
        calls.append(1)
        return ratio
    chosen, why = auto_precision(facts, probe=probe)
    assert chosen == want and calls == [1]
    assert f'{ratio:.2f}x' in why


def test_gpu_with_bf16_picks_bf16_unless_fp16_asks_for_float16():
    assert auto_precision(H100)[0] == 'bf16-mixed'
    # the official templates set conf.fp16: float16 autocast, as the
    # reference trains on GPUs
    assert auto_precision(H100, fp16=True)[0] == '16-mixed'


def test_gpu_without_bf16():
    assert auto_precision(V100)[0] == '32-true'
    assert auto_precision(V100, fp16=True)[0] == '16-mixed'


def test_explicit_precision_wins_over_conf_and_hardware():
    chosen, why = choose_precision('auto', False, 'cpu', 'bf16-mixed',
                                   facts=XEON_NO_BF16)
    assert chosen == 'bf16-mixed' and 'passed to train()' in why
    chosen, why = choose_precision('32-true', False, 'cpu', None,
                                   facts=EPYC_BF16)
    assert chosen == '32-true' and "conf.precision='32-true'" in why
    for conf_precision in ('auto', None):
        chosen, why = choose_precision(conf_precision, False, 'cpu', None,
                                       facts=XEON_NO_BF16)
        assert chosen == '32-true' and why.startswith("conf.precision='auto'")


def test_probe_is_timed_once_and_cached(tmp_path, monkeypatch):
    cache = tmp_path / 'probe.json'
    ratio = hardware.probe_cpu_bf16(seconds=0.05, cache=cache)
    assert ratio > 0 and cache.exists()

    # the second call reads the cache: no convolution runs
    def fail(*a, **k):
        raise AssertionError('probe ran again')
    monkeypatch.setattr(hardware.torch.nn, 'Conv2d', fail)
    assert hardware.probe_cpu_bf16(seconds=0.05, cache=cache) == ratio


def test_train_says_what_it_chose_and_why(caplog, monkeypatch):
    from experiment import resolve_precision
    from templates import shapes32_autoenc
    monkeypatch.setattr(hardware, 'read_facts', lambda acc: XEON_NO_BF16)
    conf = shapes32_autoenc()
    assert conf.precision == 'auto'
    with caplog.at_level(logging.INFO):
        assert resolve_precision(conf, 'cpu') == '32-true'
    assert "precision: 32-true (conf.precision='auto': CPU has no native " \
        'bf16' in caplog.text


def test_this_machine_is_described():
    facts = hardware.read_facts('cpu')
    assert facts.accelerator == 'cpu' and facts.describe()
    chosen, why = auto_precision(facts)
    assert chosen in ('bf16-mixed', '32-true') and why

"""rsam.hardware: bf16 instructions read from /proc/cpuinfo (x86 and Arm layouts), oneDNN's ISA cap, and the one
warning where bf16 was asked for on a CPU that would emulate it (Predictor and the Trainer builder)."""

import logging

import pytest
from helpers.benchmark_loop import tiny_model

from rsam import hardware
from rsam.predict import Predictor

# hand-written in the layout of /proc/cpuinfo: a Sapphire Rapids, a Cascade Lake (AVX-512, no bf16), a Graviton 3
X86_SPR = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu sse2 avx2 avx512f avx512bw \
avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n"
X86_CLX = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6248\nflags\t\t: fpu sse2 avx2 avx512f avx512bw \
avx512_vnni\n"
ARM_G3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    "text, native",
    [(X86_SPR, True), (X86_CLX, False), (ARM_G3, True), ("processor\t: 0\nflags\t\t: fpu sse2\n", False)],
)
def test_bf16_instructions_are_read_from_cpuinfo(tmp_path, text, native):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    flags = hardware.cpu_flags(path)
    assert hardware.native_bf16(flags, environ={}) is native


def test_the_first_flags_line_is_read_and_unknown_cpuinfo_is_none(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(X86_SPR)
    assert "amx_bf16" in hardware.cpu_flags(path) and "fpu" in hardware.cpu_flags(path)
    assert hardware.cpu_flags(tmp_path / "absent") is None
    path.write_text("no flags here\n")
    assert hardware.cpu_flags(path) is None


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
@pytest.mark.parametrize("isa, native", [("avx512_core", False), ("AVX2", False), ("AVX512_CORE_AMX", True)])
def test_onednn_isa_cap_without_bf16_counts_as_emulated(variable, isa, native):
    flags = frozenset({"avx512f", "avx512_bf16", "amx_bf16"})
    assert hardware.native_bf16(flags, environ={variable: isa}) is native


@pytest.mark.parametrize("native", [True, False])
def test_predictor_warns_once_when_bf16_would_be_emulated(monkeypatch, caplog, native):
    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    model = tiny_model()
    with caplog.at_level(logging.WARNING, logger="rsam.hardware"):
        Predictor(model, precision="bf16")
        Predictor(model, precision="fp32")
    warned = [r for r in caplog.records if "no bf16 instructions" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    if warned:
        assert "Predictor(precision='bf16')" in warned[0].getMessage()


def test_trainer_builder_warns_for_bf16_mixed_on_a_cpu_without_bf16(monkeypatch, caplog, tmp_path):
    from rsam.lit.build import build_trainer
    from rsam.recipes import load_recipe

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    overrides = [f"trainer.default_root_dir={tmp_path}", "trainer.accelerator=cpu"]
    with caplog.at_level(logging.WARNING, logger="rsam.hardware"):
        build_trainer(load_recipe("demo", overrides, check_files=False), use_wandb=False)
        assert not [r for r in caplog.records if "no bf16 instructions" in r.getMessage()]
        trainer = build_trainer(
            load_recipe("demo", [*overrides, "trainer.precision=bf16-mixed"], check_files=False), use_wandb=False
        )
    warned = [r for r in caplog.records if "no bf16 instructions" in r.getMessage()]
    assert len(warned) == 1 and "trainer.precision=bf16-mixed" in warned[0].getMessage()
    assert "bf16" in str(trainer.precision)

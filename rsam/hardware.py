"""Whether this CPU runs bf16 in hardware, and one warning where bf16 was asked for and would be emulated.

bf16 autocast is fast on a CPU only with bf16 instructions: AVX512_BF16 or AMX-BF16 on x86 (Cooper Lake, Sapphire
Rapids and later, AMD Zen 4 and later), BF16 on Arm (Neoverse V1/N2, Graviton 3 and later). Elsewhere PyTorch and
oneDNN emulate it: on an AVX-512 CPU without bf16 instructions (oneDNN capped with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``
on an AMX machine, 2 cores) a 2048² matmul ran 4.4× and a 3×3 convolution (256 channels, 112²) 4.1× slower in bf16
than in fp32, where with the instructions they ran 0.2× and 0.4× (2026-12-02). So bf16 is then slower than fp32 as
well as less exact.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

log = logging.getLogger(__name__)

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 /proc/cpuinfo flags; Arm "Features: bf16"
# oneDNN's own cap on the instruction set (ONEDNN_MAX_CPU_ISA, or DNNL_MAX_CPU_ISA): the values without bf16
ISA_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_MIC", "AVX512_MIC_4OPS"}
)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags (the first ``flags`` / ``Features`` line of ``cpuinfo``), or None where unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def native_bf16(flags: frozenset[str] | None = None, environ=os.environ) -> bool | None:
    """True if the CPU has bf16 instructions that oneDNN may use, False if not, None where it cannot be told
    (no /proc/cpuinfo, e.g. macOS). ``flags`` default to :func:`cpu_flags`."""
    isa = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if isa in ISA_WITHOUT_BF16:
        return False
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return bool(flags & BF16_FLAGS)


def warn_if_bf16_is_emulated(what: str, device_type: str = "cpu") -> bool:
    """Log one warning if ``what`` (e.g. ``"precision='bf16'"``) runs bf16 on a CPU without bf16 instructions;
    returns whether it warned. GPUs are not concerned."""
    if device_type != "cpu" or native_bf16() is not False:
        return False
    log.warning(
        "%s on this CPU (%s) has no bf16 instructions (AVX512_BF16, AMX-BF16 or Arm BF16): bf16 matmuls and "
        "convolutions are emulated and run about 4x slower than fp32; use fp32 here",
        what,
        platform.processor() or platform.machine(),
    )
    return True

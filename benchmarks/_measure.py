"""Shared helpers for benchmarks: CPU interference accounting, peak RSS, a float32 matmul ceiling."""

from __future__ import annotations

import os
import resource
import statistics
import time

import torch


def _proc_stat() -> tuple[float, float]:
    """(busy seconds of the whole machine, steal seconds) from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [float(v) for v in handle.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


class Timed:
    """Context manager: wall seconds, this process's CPU seconds and other processes' CPU seconds."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.busy0, self.steal0 = _proc_stat()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        busy1, steal1 = _proc_stat()
        self.other_cpu = max(0.0, (busy1 - self.busy0) - self.cpu)
        self.steal = steal1 - self.steal0
        return False


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(n: int = 4096, warmup: int = 3, reps: int = 10) -> dict:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(warmup):
        torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"n": n, "median_s": med, "gflops": 2 * n**3 / med / 1e9, "best_gflops": 2 * n**3 / min(times) / 1e9}


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (``/proc/self/clear_refs``), as the official runner's bench.py does."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mib() -> float:
    """VmHWM since the last :func:`reset_peak_rss` (the process-lifetime peak where a reset is not allowed)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def cpu_block(timed: Timed) -> dict:
    """The official runner's ``cpu`` block fields for a :class:`Timed` block."""
    return {
        "wall_s": round(timed.wall, 3),
        "own_cpu_s": round(timed.cpu, 2),
        "other_procs_cpu_s": round(timed.other_cpu, 2),
        "other_procs_cores_avg": round(timed.other_cpu / timed.wall, 3) if timed.wall > 0 else None,
        "steal_s": round(timed.steal, 2),
    }

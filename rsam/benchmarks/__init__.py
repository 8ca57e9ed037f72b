"""Benchmark readers (tiny, offline formats), the registry, per-task evaluators and the model-free runner."""

from rsam.benchmarks.registry import BENCHMARKS, BenchmarkSpec, benchmark_names, get_benchmark
from rsam.benchmarks.runner import results_markdown, run_benchmark, run_registered
from rsam.benchmarks.samples import BoxTarget, Sample

__all__ = [
    "BENCHMARKS",
    "BenchmarkSpec",
    "BoxTarget",
    "Sample",
    "benchmark_names",
    "get_benchmark",
    "results_markdown",
    "run_benchmark",
    "run_registered",
]

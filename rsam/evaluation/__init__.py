"""Benchmark readers (tiny, offline formats), the registry, per-task evaluators and the model-free runner."""

from rsam.evaluation.registry import BENCHMARKS, BenchmarkSpec, benchmark_names, get_benchmark
from rsam.evaluation.runner import results_markdown, run_benchmark, run_registered
from rsam.evaluation.samples import BoxTarget, Sample

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

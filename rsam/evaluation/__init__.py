"""Evaluation of the paper's benchmarks, model-free (no Lightning): ``readers/`` (one module per dataset family),
``registry`` (name -> reader, evaluator, metrics), ``evaluators`` (the official conversion of probability maps per
task), ``runner`` (any ``predict_fn``), ``prediction_files`` (``rsam score`` on saved predictions) and
``dota_submission`` (DOTA Task1 / Task2 files). The Lightning test loop is :mod:`rsam.lit.benchmark`."""

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

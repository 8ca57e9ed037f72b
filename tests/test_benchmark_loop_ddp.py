"""Two CPU ranks (DDP, gloo) give the single-process benchmark figures: each rank scores a disjoint share, the odd
sample count pads rank 1 with one empty item that is never scored, summed states (referring segmentation) and the
per-image list states of COCO and DOTA-devkit detection (gathered whole, see rsam.evaluation.metric_sync) are
synchronised. The
script runs in a subprocess (the in-process DDP launcher is unsafe in pytest)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.benchmark_loop import DIOR_BOXES, save_tiny_model, write_dior, write_dota, write_refsegrs
from helpers.shard_utils import subprocess_env

from rsam.lit.benchmark import run_benchmark_test

SCRIPT = Path(__file__).parent / "helpers" / "benchmark_cli.py"
DIOR_FIVE = DIOR_BOXES + [[("ship", (10, 10, 40, 40))], [("vehicle", (0, 0, 20, 20))]]


@pytest.mark.parametrize(
    "benchmark, write, count",
    [
        ("dior-det", lambda root: write_dior(root, DIOR_FIVE), "images"),
        ("refsegrs", write_refsegrs, "samples"),
        (
            "dota-v2-obb",
            lambda root: write_dota(root, (120, 160), 5, [("ship", (10, 10, 60, 12, 58, 40, 8, 38))]),
            "images",
        ),
    ],
)
def test_two_ranks_equal_one_rank(benchmark, write, count, tmp_path):
    model = save_tiny_model(tmp_path / "model")
    data = write(tmp_path / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_benchmark_test(
            benchmark, data, model, tmp_path / "one", accelerator="cpu", use_wandb=False, progress_bar=False
        )["metrics"]
    finally:
        torch.set_num_threads(threads)
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--benchmark",
            benchmark,
            "--data",
            str(data),
            "--ckpt",
            str(model),
            "--out",
            str(tmp_path / "two"),
            "--devices",
            "2",
            "--accelerator",
            "cpu",
            "--num-workers",
            "0",
            "--no-wandb",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 scored 3 samples" in result.stderr and "rank 1 scored 2 samples" in result.stderr
    saved = json.loads((tmp_path / "two" / "results.json").read_text())
    assert saved["world_size"] == 2 and saved["metrics"][count] == single[count] == 5
    for key, value in single.items():
        assert saved["metrics"][key] == (
            pytest.approx(value, abs=1e-9) if not isinstance(value, dict) else pytest.approx(value)
        ), key
    if benchmark.startswith("dota"):  # the submission files gathered from both ranks equal the one-rank files
        one = {p.name: p.read_text() for p in (tmp_path / "one" / "submission").glob("*.txt")}
        two = {p.name: p.read_text() for p in (tmp_path / "two" / "submission").glob("*.txt")}
        assert len(one) == 36 and one == two
        assert sum(len(text.splitlines()) for text in two.values()) > 0

"""Forward speed of the official RemoteSAM configuration on this machine, against a float32 matmul ceiling.

Official configuration (Swin-B window 12, BERT-base), random weights, 896x896, batch 1, fp32, eval, no grad.
Prints one JSON object: median seconds per forward, peak RSS, FLOPs (torch FlopCounterMode, 2 per multiply-add),
the matmul ceiling measured in the same run (before and after), and achieved GFLOP/s as a fraction of it.
The official code reaches 71 % of that ceiling here (shared/spec/baseline.md).

    python benchmarks/forward.py [--repeats 5] [--warmup 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Timed, matmul_gflops, peak_rss_mib  # noqa: E402

from rsam.models import build_model, official_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=896)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ceiling_before = matmul_gflops()
    model = build_model(official_config()).eval()
    rss_after_build = peak_rss_mib()
    images = torch.randn(1, 3, args.size, args.size)
    ids = torch.tensor([[101, 1996, 13297, 2006, 1996, 2157, 2217, 102] + [0] * 12])
    mask = (ids > 0).long()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(images, ids, mask)
        flops = counter.get_total_flops()
        for _ in range(args.warmup):
            model(images, ids, mask)
        runs = []
        for _ in range(args.repeats):
            with Timed() as t:
                model(images, ids, mask)
            runs.append(
                {
                    "wall": round(t.wall, 3),
                    "cpu": round(t.cpu, 2),
                    "other_cpu": round(t.other_cpu, 2),
                    "steal": round(t.steal, 2),
                }
            )
    ceiling_after = matmul_gflops()
    median = statistics.median(r["wall"] for r in runs)
    ceiling = statistics.mean([ceiling_before["gflops"], ceiling_after["gflops"]])
    achieved = flops / median / 1e9
    print(
        json.dumps(
            {
                "config": "official (Swin-B w12, BERT-base)",
                "input": [1, 3, args.size, args.size],
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "median_s": median,
                "runs": runs,
                "flops": flops,
                "achieved_gflops": round(achieved, 1),
                "matmul_gflops_before": round(ceiling_before["gflops"], 1),
                "matmul_gflops_after": round(ceiling_after["gflops"], 1),
                "fraction_of_matmul_ceiling": round(achieved / ceiling, 3),
                "official_fraction": 0.71,
                "peak_rss_mib": round(peak_rss_mib(), 0),
                "rss_after_build_mib": round(rss_after_build, 0),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""2-process CPU step time of the demo recipe under DDP, DeepSpeed ZeRO-2 and ZeRO-3, measured side by side.

    python benchmarks/distributed_step.py [--config demo] [--steps 8] [--warmup 2] [--rounds 1] [overrides ...]

Each round runs the real ``rsam fit`` once per strategy (2 processes, gloo, one thread per rank; the DeepSpeed runs go
through the CPU strategy shim), strategies interleaved so that drifting load on a shared machine hits all of them.
Rank 0 times every optimisation step from ``on_train_batch_start`` to ``on_train_batch_end`` (forward, loss,
backward, gradient reduction / ZeRO partition traffic, optimiser step; data loading excluded); the first ``--warmup``
steps are dropped. Prints one JSON object: per strategy the median and all step times, and the ratios to DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = {
    "ddp": ["trainer.strategy=ddp"],
    "zero2": ["trainer.strategy=deepspeed", "deepspeed.stage=2"],
    "zero3": ["trainer.strategy=deepspeed", "deepspeed.stage=3"],
}


def worker(out: Path, argv: list[str]) -> int:
    """Runs ``rsam fit ARGV`` with a step timer on rank 0 (this script is what Lightning re-runs for rank 1)."""
    sys.path.insert(0, str(REPO))
    import lightning.pytorch as pl

    import rsam.lit.build as build
    from rsam.cli.main import main as rsam_main

    class StepTimer(pl.Callback):
        def __init__(self):
            self.started, self.seconds = 0.0, []

        def on_train_batch_start(self, trainer, *args):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, *args):
            self.seconds.append(time.perf_counter() - self.started)
            if trainer.global_rank == 0:
                out.write_text(json.dumps(self.seconds))

    original = build.build_callbacks
    build.build_callbacks = lambda *a, **k: original(*a, **k) + [StepTimer()]
    return rsam_main(argv)


def run_once(name: str, args, scratch: Path) -> list[float]:
    out = scratch / f"{name}-{time.time_ns()}.json"
    command = [
        sys.executable,
        __file__,
        "_worker",
        str(out),
        "fit",
        "--config",
        args.config,
        "--no-wandb",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={args.steps}",
        "trainer.max_time=null",
        "trainer.enable_progress_bar=false",
        f"trainer.default_root_dir={scratch / name}",
        *STRATEGIES[name],
        *args.overrides,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=REPO)
    if result.returncode != 0 or not out.is_file():
        raise SystemExit(f"{name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())[args.warmup :]


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        return worker(Path(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument("overrides", nargs="*", help="dotted recipe overrides for every run")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    with tempfile.TemporaryDirectory(prefix="rsam-dist-bench-") as scratch:
        for _ in range(args.rounds):
            for name in STRATEGIES:
                seconds[name] += run_once(name, args, Path(scratch))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(
        json.dumps(
            {
                "config": args.config,
                "processes": 2,
                "device": "cpu",
                "steps_timed_per_run": args.steps - args.warmup,
                "rounds": args.rounds,
                "median_step_s": {name: round(value, 4) for name, value in medians.items()},
                "ratio_to_ddp": {name: round(value / medians["ddp"], 3) for name, value in medians.items()},
                "step_s": {name: [round(v, 4) for v in values] for name, values in seconds.items()},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

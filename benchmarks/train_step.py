"""Training figures on this machine: seconds per optimisation step and peak RSS, and the demo's val oIoU.

    python benchmarks/train_step.py step --config demo [--steps 5]          # demo recipe, its batch size
    python benchmarks/train_step.py step --config official --batch 1        # official network, 896 px, fp32
    python benchmarks/train_step.py demo [--max-steps N] [overrides ...]   # validate -> fit -> validate best

``step`` times full optimisation steps (forward, official loss, backward, AdamW over the official parameter groups)
on random inputs of the recipe's model, after warm-up; it prints one JSON object (median / all step times, peak RSS
of this process, CPU time taken by other processes meanwhile, which inflates the wall time on a shared machine).
``demo`` runs the real CLI: ``rsam validate`` on the initial weights, ``rsam fit`` (timed), ``rsam validate`` on the
best checkpoint; it also reports the constant predictors' oIoU on the validation split and the one-to-zero figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Timed, peak_rss_mib  # noqa: E402

from rsam.recipes import load_recipe, model_config  # noqa: E402


def guard_memory(limit_gib: float) -> None:
    """Exit (code 3, one JSON line) as soon as this process's RSS passes ``limit_gib``: the machine is shared."""
    import os
    import threading

    import psutil

    def watch():
        process = psutil.Process()
        while True:
            rss = process.memory_info().rss / 2**30
            if rss > limit_gib:
                print(
                    json.dumps({"aborted": f"RSS {rss:.1f} GiB passed the --max-rss-gib {limit_gib} guard"}), flush=True
                )
                os._exit(3)
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def step_figures(args) -> dict:
    from rsam.lit.module import RemoteSAMModule
    from rsam.models import official_config

    if args.config == "official":
        cfg, optim, batch = official_config(), {"lr": 3e-5}, args.batch or 1
    else:
        recipe = load_recipe(args.config, args.overrides, check_files=False)
        cfg, optim, batch = model_config(recipe), dict(recipe.optim), args.batch or recipe.data.batch_size
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
    if args.max_rss_gib:
        guard_memory(args.max_rss_gib)
    torch.manual_seed(0)
    module = RemoteSAMModule(cfg.to_dict(), optim).train()
    optimizer = torch.optim.AdamW(
        module.param_groups.optimizer_groups(module.optim["weight_decay"]), lr=module.optim["lr"]
    )
    height, width = cfg.image_size
    images = torch.randn(batch, 3, height, width)
    ids = torch.randint(1000, 3000, (batch, cfg.max_tokens))
    attention = torch.ones_like(ids)
    target = (torch.rand(batch, height, width) > 0.9).long()
    times, others = [], []
    for index in range(args.warmup + args.steps):
        with Timed() as timed:
            loss = module.criterion(module(images, ids, attention), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if index >= args.warmup:
            times.append(timed.wall)
            others.append(timed.other_cpu)
    return {
        "config": args.config,
        "image_size": [height, width],
        "batch": batch,
        "precision": "fp32",
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "median_step_s": statistics.median(times),
        "step_s": [round(t, 3) for t in times],
        "other_processes_cpu_s": [round(t, 2) for t in others],
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def rsam(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "rsam.cli.main", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"rsam {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def constant_baselines(recipe) -> dict:
    """oIoU of predicting all-foreground / all-background for every validation sample."""
    from rsam.lit.data import build_datamodule

    dataset = build_datamodule(recipe).dataset(recipe.data.val_split)
    foreground = total = 0
    for index in range(len(dataset)):
        mask = dataset[index]["mask"]
        foreground += int(mask.sum())
        total += mask.numel()
    # all-foreground: I = |G|, U = every pixel; all-background: I = 0
    return {"all_foreground_oIoU": foreground / total, "all_background_oIoU": 0.0, "val_samples": len(dataset)}


def demo_figures(args) -> dict:
    overrides = list(args.overrides)
    recipe = load_recipe("demo", overrides)
    before = rsam("validate", "--config", "demo", *overrides, "--no-wandb")
    started = time.time()
    fit = rsam("fit", "--config", "demo", *overrides)
    fit_seconds = time.time() - started
    after = rsam("validate", "--config", "demo", *overrides, "--ckpt_path", "best", "--no-wandb")
    return {
        "constant": constant_baselines(recipe),
        "fit_wall_s": round(fit_seconds, 1),
        "fit_summary": fit,
        "val_before": before["metrics"],
        "val_after_best": after["metrics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="what", required=True)
    step = commands.add_parser("step")
    step.add_argument("--config", default="demo", help="a recipe name/path, or 'official'")
    step.add_argument("--batch", type=int, default=None)
    step.add_argument("--steps", type=int, default=5)
    step.add_argument("--warmup", type=int, default=2)
    step.add_argument("--max-rss-gib", type=float, default=None, help="abort when this process's RSS passes it")
    step.add_argument("overrides", nargs="*")
    demo = commands.add_parser("demo")
    demo.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(json.dumps(step_figures(args) if args.what == "step" else demo_figures(args), indent=1))


if __name__ == "__main__":
    main()

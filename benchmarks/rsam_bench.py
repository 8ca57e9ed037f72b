"""rsam's side of the official runner's ``bench.py``: the same sections, inputs and JSON fields, for rsam.

Official configuration (Swin-B window 12, BERT-base, 896²), random weights. Sections (``--sections``):

- ``forward``: ``--n`` timed forwards at batch 1 under ``torch.no_grad()`` after ``--warmup``;
- ``semseg``: ``Predictor.predict`` on the official demo image (800²) with ``--k`` prompts "{c} in the image" (the
  official ``semantic_seg`` prompts; same class list), the batch size measured (``--chunk-size auto``);
- ``train``: ``--train-steps`` full steps (forward, official loss, backward, fused AdamW over the official groups,
  poly LambdaLR) at ``--train-batch``, random images, one box of class 1 per sample, as bench.py; run as a fit runs
  them (the gradients dropped right after the update; with ``--checkpointing`` the fit's allocator setting).

``--precision bf16`` runs under bf16 autocast (norms, softmax and the loss stay float32); ``--checkpointing`` turns
on ``activation_checkpointing``; ``--compile`` runs ``Module.compile()`` first (its compile time is reported apart).
Every timed block records other processes' CPU use; peak RSS per phase is VmHWM after a reset, as bench.py.
The process runs on the allocator rsam's commands run on (``rsam.allocator``: jemalloc where installed;
``RSAM_MALLOC=system`` for glibc's); the JSON names it (``allocator``).

    python benchmarks/rsam_bench.py --sections forward semseg train --k 10 --train-batch 1 [--precision bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rsam.allocator import active, relaunch_on_jemalloc

relaunch_on_jemalloc()  # as the rsam command does, before torch allocates anything

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Timed, cpu_block, phase_peak_rss_mib, reset_peak_rss  # noqa: E402

# the official runner's DEFAULT_CLASSES (bench.py), in its order
CLASSES = ["airplane", "ship", "storage tank", "baseball field", "tennis court", "basketball court",
           "ground track field", "harbor", "bridge", "vehicle", "building", "tree", "road", "water", "farmland",
           "parking lot", "roundabout", "swimming pool", "soccer field", "helicopter"]  # fmt: skip


def official_demo_image(root: str | None) -> tuple[np.ndarray, str]:
    from PIL import Image

    path = Path(root or os.environ.get("OFFICIAL_ROOT", "/nonexistent")) / "src" / "assets" / "demo.jpg"
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB")), str(path)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8), "random 768x1024"


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summarize(times: list[float]) -> dict:
    return {
        "times_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
    }


def bench_forward(model, args) -> dict:
    from rsam.predict import Predictor

    predictor = Predictor(model, precision=args.precision)
    image, _ = official_demo_image(args.official_root)
    from rsam.preprocess import normalize, resize_image

    x = normalize(resize_image(image, model.config.image_size))[None]
    ids, mask = predictor.tokenizer(["airplane in the image"])
    reset_peak_rss()
    with torch.no_grad(), autocast(args.precision):
        began = time.perf_counter()
        for _ in range(args.warmup):
            model(x, ids, mask)
        warmup_s = time.perf_counter() - began  # includes torch.compile's compilation with --compile
        times = []
        with Timed() as timed:
            for _ in range(args.n):
                start = time.perf_counter()
                model(x, ids, mask)
                times.append(time.perf_counter() - start)
    return {
        **summarize(times),
        "n": args.n,
        "warmup_s": round(warmup_s, 2),
        "cpu": cpu_block(timed),
        "peak_rss_mb": round(phase_peak_rss_mib(), 1),
    }


def bench_semseg(model, args) -> dict:
    from rsam.predict import Predictor

    image, source = official_demo_image(args.official_root)
    names = CLASSES[: args.k] + [f"object {i}" for i in range(len(CLASSES), args.k)]
    chunk = args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size)
    predictor = Predictor(model, chunk_size=chunk, precision=args.precision)
    reset_peak_rss()
    with Timed() as timed:
        found = predictor.predict(image, [f"{name} in the image" for name in names])
        masks = [p.mask for p in found]  # the full-size masks, as semantic_seg returns them
    return {
        "k": args.k,
        "image": source,
        "image_hw": list(image.shape[:2]),
        "total_s": round(timed.wall, 3),
        "per_prompt_s": round(timed.wall / args.k, 3),
        "chunk_size": chunk,
        "chosen_chunk_size": predictor._tuned if chunk == "auto" else chunk,
        "mask_shapes_ok": all(m.shape == image.shape[:2] for m in masks),
        "cpu": cpu_block(timed),
        "peak_rss_mb": round(phase_peak_rss_mib(), 1),
    }


def bench_train(module, args) -> dict:
    from rsam.lit.module import poly_factor

    torch.manual_seed(2401)
    rng = np.random.default_rng(2401)
    batch = args.train_batch
    height, width = module.model_config.image_size
    from rsam.preprocess import normalize

    images = torch.stack([normalize(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(batch)])
    target = torch.zeros(batch, height, width, dtype=torch.int64)
    for b in range(batch):
        y0, x0 = rng.integers(0, max(1, height - 296), 2)
        target[b, y0 : y0 + 250 * height // 896, x0 : x0 + 300 * width // 896] = 1
    from rsam.text import Tokenizer

    ids, attention = Tokenizer()([f"the {c} on the left" for c in CLASSES[:batch]])
    optimizer = module.make_optimizer()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly_factor(step, 40_000, 0.9))
    module.train()
    module.on_fit_start()  # what a fit does first (with --checkpointing on a CPU: jemalloc returns freed pages)
    reset_peak_rss()
    steps = []
    with Timed() as timed:
        for _ in range(args.train_steps):
            t0 = time.perf_counter()
            with autocast(args.precision):
                logits = module(images, ids, attention)
            t1 = time.perf_counter()
            loss = module.criterion(logits, target)
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # as RemoteSAMModule.optimizer_step: no gradients in the forward
            scheduler.step()
            t4 = time.perf_counter()
            steps.append(
                {
                    "step_s": round(t4 - t0, 3),
                    "forward_s": round(t1 - t0, 3),
                    "loss_s": round(t2 - t1, 3),
                    "backward_s": round(t3 - t2, 3),
                    "optimizer_s": round(t4 - t3, 3),
                    "loss": round(float(loss), 5),
                }
            )
            print(f"train step: {steps[-1]}", file=sys.stderr, flush=True)
            del logits, loss
    return {
        "batch": batch,
        "steps": args.train_steps,
        "per_step": steps,
        "first_step_s": steps[0]["step_s"],
        "last_step_s": steps[-1]["step_s"],
        "optimizer": type(optimizer).__name__ + (" (fused)" if optimizer.defaults.get("fused") else ""),
        "cpu": cpu_block(timed),
        "peak_rss_mb": round(phase_peak_rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["forward"], choices=["forward", "semseg", "train"])
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", default="auto")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--checkpointing", action="store_true", help="model.activation_checkpointing")
    parser.add_argument("--compile", action="store_true", help="model.compile (Module.compile)")
    parser.add_argument("--config", default="official", help="'official', or a recipe name/path (its model section)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--official-root", default=None, help="where the official demo image is (src/assets)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from rsam.lit.module import RemoteSAMModule
    from rsam.models import official_config
    from rsam.recipes import load_recipe, model_config

    config = (
        official_config() if args.config == "official" else model_config(load_recipe(args.config, check_files=False))
    )

    report = {
        "tool": "rsam_bench",
        "args": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "allocator": active(),
    }
    torch.manual_seed(0)
    reset_peak_rss()
    start = time.perf_counter()
    runtime = {"activation_checkpointing": args.checkpointing, "compile": args.compile}
    module = RemoteSAMModule(config.to_dict(), {"lr": 3e-5}, runtime)
    module.model.eval()
    report["model"] = {"build_s": round(time.perf_counter() - start, 2), "peak_rss_build_mb": phase_peak_rss_mib()}
    if args.compile:
        module.configure_model()
    if "forward" in args.sections:
        report["forward_896_b1"] = bench_forward(module.model, args)
    if "semseg" in args.sections:
        report["semseg"] = bench_semseg(module.model, args)
    if "train" in args.sections:
        report["train_step"] = bench_train(module, args)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

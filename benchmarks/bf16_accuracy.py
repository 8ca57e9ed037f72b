"""bf16 autocast against fp32 on real images: max |Δ prob|, mask pixel agreement, per-image mask IoU, speed.

Images: the demo dataset's validation chips (NEON orthophotos, SpaceNet-4 WorldView-2; their own expressions) and
the official demo image (``$OFFICIAL_ROOT/src/assets/demo.jpg``, "airplane in the image"). Weights: the official
configuration with random weights (``--weights random``; no trained RemoteSAM weights exist offline), the golden
tiny model of the reference set (``--weights golden``), or any checkpoint ``rsam.checkpoint.load_model`` reads
(``--weights checkpoint --checkpoint PATH``: e.g. the demo job's trained ``outputs/demo/checkpoints/best.ckpt``).
The masks of untrained weights sit close to the decision boundary in places, so pixel agreement there is a
pessimistic measure of what bf16 changes.

    python benchmarks/bf16_accuracy.py [--weights random|golden|checkpoint] [--checkpoint PATH] [--images 6]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Timed, cpu_block  # noqa: E402


def demo_chips(folder: Path, limit: int) -> list[tuple[str, np.ndarray, str]]:
    found, seen = [], set()
    for shard in sorted(folder.glob("val-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in sorted(members):
                if not name.endswith(".json"):
                    continue
                key = name[: -len(".json")]
                meta = json.loads(tar.extractfile(members[name]).read())
                text = meta.get("text") or meta.get("expression") or (meta.get("sentences") or ["object"])[0]
                image = np.asarray(Image.open(io.BytesIO(tar.extractfile(members[key + ".png"]).read())).convert("RGB"))
                digest = hash(image.tobytes()[:4096])
                if digest in seen:
                    continue
                seen.add(digest)
                found.append((f"{shard.name}:{key}", image, str(text)))
                if len(found) >= limit:
                    return found
    return found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", choices=["random", "golden", "checkpoint"], default="random")
    parser.add_argument("--checkpoint", default=None, help="with --weights checkpoint: a file or folder to load")
    parser.add_argument("--reference-dir", default="/work/shared/reference")
    parser.add_argument("--data", default=os.path.join(os.environ.get("RSAM_DATA_DIR", "data"), "demo"))
    parser.add_argument("--official-root", default=os.environ.get("OFFICIAL_ROOT", ""))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from rsam.models import build_model, official_config
    from rsam.predict import Predictor

    torch.manual_seed(0)
    if args.weights == "golden":
        from rsam.checkpoint.golden import load_golden_config, load_golden_weights

        reference = Path(args.reference_dir)
        model = build_model(load_golden_config(reference / "tiny_config.json"))
        model.load_state_dict(load_golden_weights(reference / "tiny_weights.safetensors"), strict=True)
    elif args.weights == "checkpoint":
        from rsam.checkpoint.loader import load_model

        if not args.checkpoint:
            parser.error("--weights checkpoint needs --checkpoint PATH")
        model = load_model(args.checkpoint)
    else:
        model = build_model(official_config())
    images = demo_chips(Path(args.data), args.images - 1)
    demo = Path(args.official_root) / "src" / "assets" / "demo.jpg"
    if demo.is_file():
        images.append(
            ("official assets/demo.jpg", np.asarray(Image.open(demo).convert("RGB")), "airplane in the image")
        )
    golden = args.weights == "golden"
    fp32 = Predictor(model, chunk_size=1, unknown_out_of_vocab=golden)
    bf16 = Predictor(model, chunk_size=1, unknown_out_of_vocab=golden, precision="bf16")
    fp32.predict(images[0][1], images[0][2])  # warm-up of both paths
    bf16.predict(images[0][1], images[0][2])
    rows, seconds = [], {"fp32": [], "bf16": []}
    for name, image, text in images:
        with Timed() as t32:
            a = fp32.predict(image, text)[0]
        with Timed() as t16:
            b = bf16.predict(image, text)[0]
        seconds["fp32"].append(t32.wall)
        seconds["bf16"].append(t16.wall)
        prob_a, prob_b, mask_a, mask_b = a.prob, b.prob, a.mask.astype(bool), b.mask.astype(bool)
        rows.append(
            {
                "image": name,
                "hw": list(image.shape[:2]),
                "text": text,
                "max_abs_delta_prob": float(np.abs(prob_a - prob_b).max()),
                "mean_abs_delta_prob": float(np.abs(prob_a - prob_b).mean()),
                "pixel_agreement": float((mask_a == mask_b).mean()),
                "mask_iou": iou(mask_a, mask_b),
                "fp32_foreground": float(mask_a.mean()),
                "fp32_median_margin": float(np.median(np.abs(prob_a - 0.5))),  # how decided the fp32 pixels are
                "agreement_where_margin_above_max_delta": float(
                    (mask_a == mask_b)[np.abs(prob_a - 0.5) > np.abs(prob_a - prob_b).max()].mean()
                    if (np.abs(prob_a - 0.5) > np.abs(prob_a - prob_b).max()).any()
                    else 1.0
                ),
                "fp32_s": round(t32.wall, 2),
                "bf16_s": round(t16.wall, 2),
                "cpu_fp32": cpu_block(t32),
                "cpu_bf16": cpu_block(t16),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("cpu")}), file=sys.stderr, flush=True)
        if args.out:  # partial results survive an interrupted run
            Path(args.out).write_text(json.dumps({"partial": True, "per_image": rows}, indent=1) + "\n")
    report = {
        "weights": args.weights,
        "config": {"random": "official", "golden": "golden tiny (reference set)"}.get(args.weights, args.checkpoint),
        "cpu_has_avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
        "cpu_has_amx_bf16": "amx_bf16" in Path("/proc/cpuinfo").read_text(),
        "images": len(rows),
        "max_abs_delta_prob": max(r["max_abs_delta_prob"] for r in rows),
        "min_pixel_agreement": min(r["pixel_agreement"] for r in rows),
        "mean_pixel_agreement": float(np.mean([r["pixel_agreement"] for r in rows])),
        "min_mask_iou": min(r["mask_iou"] for r in rows),
        "mean_mask_iou": float(np.mean([r["mask_iou"] for r in rows])),
        "bf16_over_fp32_time": round(sum(seconds["bf16"]) / sum(seconds["fp32"]), 3),
        "at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "per_image": rows,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""bf16 autocast against fp32 on real images: max |Δ prob|, mask pixel agreement, per-image mask IoU, speed.

Images: the demo dataset's validation chips (NEON orthophotos, SpaceNet-4 WorldView-2; their own expressions) and
the official demo image (``$OFFICIAL_ROOT/src/assets/demo.jpg``, "airplane in the image"). Weights: the official
configuration with random weights (``--weights random``; no trained RemoteSAM weights exist offline), the golden
tiny model of the reference set (``--weights golden``), or any checkpoint ``rsam.checkpoint.load_model`` reads
(``--weights checkpoint --checkpoint PATH``: e.g. the demo job's trained ``outputs/demo/checkpoints/best.ckpt``).
The masks of untrained weights sit close to the decision boundary in places, so pixel agreement there is a
pessimistic measure of what bf16 changes.

``--ablate``: the bf16 run again with one part of the network at a time kept in float32 (text encoder, Swin blocks,
fusion, CIM, decoder, its final 1x1 classifier, patch embedding and merging), to see which part carries the error.

    python benchmarks/bf16_accuracy.py [--weights random|golden|checkpoint] [--checkpoint PATH] [--images 6] [--ablate]
"""

from __future__ import annotations

import argparse
import contextlib
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


def demo_chips(folder: Path, limit: int, split: str = "val") -> list[tuple[str, np.ndarray, str]]:
    found, seen = [], set()
    for shard in sorted(folder.glob(f"{split}-*.tar")):
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


def parts(model) -> dict[str, list[torch.nn.Module]]:
    layers = model.backbone.layers
    return {
        "text_encoder": [model.text_encoder],
        "swin_blocks": [block for layer in layers for block in layer.blocks],
        "fusion": [
            m for layer in layers for m in (layer.fusion, layer.res_gate, layer.visual_residual, layer.visual_gate)
        ],
        "cim": [model.backbone.cim],
        "decoder": [model.classifier],
        "classifier_1x1": [model.classifier.conv1_1],
        "patch_embed_and_merging": [model.backbone.patch_embed] + [x.downsample for x in layers if x.downsample],
    }


def _as_fp32(value):
    return value.float() if torch.is_tensor(value) and value.is_floating_point() else value


@contextlib.contextmanager
def kept_fp32(modules: list[torch.nn.Module]):
    """Run ``modules`` with autocast off on float32 inputs (the rest of the network stays under autocast)."""
    originals = [module.forward for module in modules]

    def wrap(forward):
        def run(*args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                return forward(*map(_as_fp32, args), **{k: _as_fp32(v) for k, v in kwargs.items()})

        return run

    for module, forward in zip(modules, originals):
        module.forward = wrap(forward)
    try:
        yield
    finally:
        for module, forward in zip(modules, originals):
            module.forward = forward


def ablation(model, predictor, images, reference) -> dict:
    """Per part kept in float32: max |Δ prob| and the per-image mask IoU against fp32."""
    found = {}
    for name, modules in parts(model).items():
        with kept_fp32(modules):
            out = [predictor.predict(image, text)[0] for _, image, text in images]
        ious = [iou(a.mask.astype(bool), b.mask.astype(bool)) for a, b in zip(reference, out)]
        found[name] = {
            "max_abs_delta_prob": float(max(np.abs(a.prob - b.prob).max() for a, b in zip(reference, out))),
            "min_mask_iou": min(ious),
            "mean_mask_iou": float(np.mean(ious)),
            "mask_iou": ious,
        }
        print(json.dumps({"fp32_part": name, **found[name]}), file=sys.stderr, flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", choices=["random", "golden", "checkpoint"], default="random")
    parser.add_argument("--checkpoint", default=None, help="with --weights checkpoint: a file or folder to load")
    parser.add_argument("--reference-dir", default="/work/shared/reference")
    parser.add_argument("--data", default=os.path.join(os.environ.get("RSAM_DATA_DIR", "data"), "demo"))
    parser.add_argument("--official-root", default=os.environ.get("OFFICIAL_ROOT", ""))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--split", default="val", help="demo split of the chips: val, or train (seen in training)")
    parser.add_argument("--ablate", action="store_true", help="also: each part of the network kept in float32")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from rsam.hardware import cpu_flags, native_bf16
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
    images = demo_chips(Path(args.data), args.images - 1, args.split)
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
    rows, seconds, reference = [], {"fp32": [], "bf16": []}, []
    for name, image, text in images:
        with Timed() as t32:
            a = fp32.predict(image, text)[0]
        with Timed() as t16:
            b = bf16.predict(image, text)[0]
        reference.append(a)
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
    flags = cpu_flags() or frozenset()
    report = {
        "weights": args.weights,
        "config": {"random": "official", "golden": "golden tiny (reference set)"}.get(args.weights, args.checkpoint),
        "cpu_has_avx512_bf16": "avx512_bf16" in flags,
        "cpu_has_amx_bf16": "amx_bf16" in flags,
        "native_bf16": native_bf16(),
        "split": args.split,
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
    if args.ablate:
        report["kept_fp32"] = ablation(model, bf16, images, reference)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

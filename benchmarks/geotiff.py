"""GeoTIFF inference at scale: peak memory stays flat as the raster grows, and throughput.

    python benchmarks/geotiff.py [--sizes 5000 20000] [--tile 1024] [--work DIR]

For each size, a synthetic 3-band uint8 scene (size x size pixels at 0.5 m GSD, EPSG:32633, smooth background with
rectangular 'roofs', DEFLATE-compressed tiled GeoTIFF, written window by window) is segmented by the real CLI
(``rsam segment SCENE --prompt ... -o OUT.tif --vectors OUT.gpkg --instances``) in a child process whose resident
memory is polled (psutil, every 0.1 s) for its peak. Model: the tiny random-weight RemoteSAM (64 px input, embed
dim 8, 2-layer text encoder: the architecture at toy widths, so it runs in minutes on 2 cores); tiles of ``--tile``
pixels (resized to the model's 64 px by the official preprocessing), overlap 200 per 896 (the DOTA ratio), cosine
blending. Reports tiles/s and km^2/min, and checks peak RSS < 4 GiB and within +-10 % between the sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GSD = 0.5


def tiny_model_dir(folder: Path) -> Path:
    import torch

    from rsam.checkpoint import save_pretrained
    from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model

    config = RemoteSAMConfig(
        image_size=(64, 64),
        swin=SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, drop_path_rate=0.0),
        text=TextConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_position_embeddings=32),
    )
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.classifier.conv1_1.weight.mul_(50)
        model.classifier.conv1_1.bias[1] += 1.2
    return save_pretrained(model.eval(), folder)


def write_scene(path: Path, size: int, strip: int = 1024) -> None:
    """A size x size scene written strip by strip (never held whole)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 4000000, GSD, GSD), nodata=0, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")  # fmt: skip
    rng = np.random.default_rng(0)
    cols = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, strip):
            rows = np.arange(row, min(row + strip, size))
            base = 90 + 40 * np.sin(rows[:, None] / 150.0) * np.cos(cols[None, :] / 210.0)
            data = np.repeat(base[None], 3, axis=0)
            for _ in range(max(1, size * len(rows) // 40000)):  # roofs: ~25 per megapixel
                y, x = rng.integers(0, len(rows) - 8), rng.integers(0, size - 8)
                h, w = rng.integers(6, 40, 2)
                data[:, y : y + h, x : x + w] = rng.integers(150, 250, (3, 1, 1))
            dst.write(np.clip(data, 1, 255).astype(np.uint8), window=Window(0, row, size, len(rows)))


def run_cli(scene: Path, model: Path, out: Path, tile: int, vectors: bool) -> dict:
    import psutil

    out = out / "out"
    out.mkdir(parents=True, exist_ok=True)
    overlap = round(tile * 200 / 896)
    command = [sys.executable, "-m", "rsam.cli.main", "segment", str(scene), "--model", str(model),
               "--prompt", "red roofs", "-o", str(out / f"{scene.stem}.tif"),
               "--tile", str(tile), "--overlap", str(overlap)]  # fmt: skip
    if vectors:
        command += ["--vectors", str(out / f"{scene.stem}.gpkg"), "--instances"]
    (out / f"{scene.stem}.tif").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"rsam segment failed on {scene}:\n{stderr[-3000:]}")
    summary = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    return {
        **summary,
        "peak_rss_bytes": peak,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "overlap": overlap,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--work", help="folder for the scenes and outputs (default: a temporary folder)")
    parser.add_argument("--no-vectors", dest="vectors", action="store_false", help="raster output only")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(args.work or tempfile.mkdtemp(prefix="rsam-geotiff-"))
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model_dir(work / "tiny-model")
    rows = []
    for size in args.sizes:
        scene = work / f"scene_{size}.tif"
        if not scene.exists():
            write_scene(scene, size)
        result = run_cli(scene, model, work, args.tile, args.vectors)
        seconds = result["seconds"]
        km2 = (size * GSD / 1000.0) ** 2
        rows.append({
            "size": size, "gsd_m": GSD, "km2": round(km2, 2),
            "tiles": result["tiles"], "tile_runs": result["tile_runs"],
            "seconds": seconds, "tiles_per_s": round(result["tile_runs"] / seconds, 2),
            "km2_per_min": round(km2 / seconds * 60, 2), "peak_rss_gib": round(result["peak_rss_bytes"] / 2**30, 3),
            "instances": result.get("features"), "tile_px": args.tile, "overlap_px": result["overlap"],
            "vectors": args.vectors,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    peaks = [r["peak_rss_gib"] for r in rows]
    verdict = {
        "peak_rss_below_4gib": max(peaks) < 4.0,
        "peak_rss_spread": round(max(peaks) / min(peaks) - 1.0, 4),
        "flat_within_10pct": max(peaks) <= 1.1 * min(peaks),
        "model": "tiny random RemoteSAM, 64 px input (benchmarks/geotiff.py::tiny_model_dir)",
    }
    print(json.dumps(verdict))
    return 0 if verdict["peak_rss_below_4gib"] and verdict["flat_within_10pct"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Render the README's EO picture from a real ``rsam segment`` result: the scene with the instance polygons of the
GPKG drawn in (map coordinates mapped back through the raster's transform), next to the probability GeoTIFF.

    python scripts/render_geo_example.py SCENE.tif OUT.tif OUT.gpkg docs/img/geotiff_example.png
"""

from __future__ import annotations

import sys

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from PIL import Image, ImageDraw


def main(scene: str, raster: str, vectors: str, png: str) -> int:
    with rasterio.open(scene) as src:
        rgb = np.moveaxis(src.read([1, 2, 3]), 0, -1)
    with rasterio.open(raster) as out:
        prob = out.read(1).astype(np.float32)
        inverse = ~out.transform
        scale_x, scale_y = rgb.shape[1] / out.width, rgb.shape[0] / out.height
    _, _, geometry, _ = pyogrio.raw.read(vectors)
    left = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(left)
    for geom in shapely.from_wkb(geometry):
        for poly in getattr(geom, "geoms", [geom]):
            ring = [(inverse * xy) for xy in poly.exterior.coords]
            draw.line([(x * scale_x, y * scale_y) for x, y in ring], fill=(255, 40, 40), width=2)
    nodata = prob == 255
    heat = np.clip(prob / 254.0, 0, 1)
    colour = np.stack([heat * 255, 60 + 0 * heat, (1 - heat) * 255], axis=-1).astype(np.uint8)
    colour[nodata] = 0
    right = Image.fromarray(colour).resize(left.size, Image.NEAREST)
    canvas = Image.new("RGB", (left.width * 2 + 8, left.height), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    canvas.quantize(colors=128).save(png, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))

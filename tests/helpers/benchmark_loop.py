"""Tiny random-weight RemoteSAM (text-dependent output) and tiny benchmark folders in the exact reader formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rsam.checkpoint import save_pretrained
from rsam.evaluation.readers.label_rasters import ISAID_PALETTE
from rsam.models import RemoteSAMConfig, SwinConfig, TextConfig, build_model
from rsam.tasks.prompts import DOTA_V2_CLASSES

TINY_CONFIG = RemoteSAMConfig(
    image_size=(64, 64),
    swin=SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, drop_path_rate=0.0),
    text=TextConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_position_embeddings=32),
)


def tiny_model(seed: int = 0):
    """Random weights; the classifier is scaled so the maps depend visibly on the text, and shifted so that about a
    fifth of the pixels are foreground."""
    torch.manual_seed(seed)
    model = build_model(TINY_CONFIG)
    with torch.no_grad():
        model.classifier.conv1_1.weight.mul_(50)
        model.classifier.conv1_1.bias[1] += 1.2
    return model.eval()


def save_tiny_model(folder: Path) -> Path:
    return save_pretrained(tiny_model(), folder)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(rng, height: int, width: int) -> np.ndarray:
    """Smooth random colours (blocks), so that resizing keeps structure."""
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.NEAREST))


def write_refsegrs(
    root: Path, sentences=("the road", "the red car", "trees on the left", "building", "a pond")
) -> Path:
    """RefSegRS release layout: images/<id>.png, masks/<id>.png, output_phrase_test.txt (one line per sentence)."""
    rng = np.random.default_rng(1)
    lines = []
    for index, text in enumerate(sentences):
        stem = str(index % 3)
        if not (root / "images" / f"{stem}.png").exists():
            _save(root / "images" / f"{stem}.png", _image(rng, 48, 64))
            mask = np.zeros((48, 64), np.uint8)
            y, x = rng.integers(0, 24), rng.integers(0, 32)
            mask[y : y + 24, x : x + 32] = 255
            _save(root / "masks" / f"{stem}.png", mask)
        lines.append(f"{stem} {text}")
    (root / "output_phrase_test.txt").write_text("\n".join(lines) + "\n")
    return root


def write_isaid_seg(root: Path, count: int = 2) -> Path:
    """iSAID layout: images/<stem>.png and RGB palette label rasters masks/<stem>.png."""
    rng = np.random.default_rng(2)
    colours = [(0, 0, 0)] + list(ISAID_PALETTE)
    for index in range(count):
        _save(root / "images" / f"P{index}.png", _image(rng, 56, 64))
        blocks = rng.integers(0, len(colours), (7, 8))
        label = np.asarray(colours, np.uint8)[blocks].repeat(8, 0).repeat(8, 1)
        _save(root / "masks" / f"P{index}.png", label)
    return root


def write_dior(
    root: Path, boxes_per_image: list[list[tuple[str, tuple[int, int, int, int]]]], size: tuple[int, int] = (64, 80)
) -> Path:
    """DIOR release layout: JPEGImages-test/<id>.jpg, Annotations/Horizontal Bounding Boxes/<id>.xml."""
    rng = np.random.default_rng(3)
    for index, boxes in enumerate(boxes_per_image):
        stem = f"{index:05d}"
        _save(root / "JPEGImages-test" / f"{stem}.jpg", _image(rng, *size))
        write_dior_xml(root, stem, boxes)
    return root


def write_dior_xml(root: Path, stem: str, boxes) -> None:
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
        for name, (x1, y1, x2, y2) in boxes
    )
    xml = root / "Annotations" / "Horizontal Bounding Boxes" / f"{stem}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(f"<annotation><filename>{stem}.jpg</filename>{objects}</annotation>")


DIOR_BOXES = [
    [("ship", (2, 3, 30, 20)), ("vehicle", (40, 30, 70, 60))],
    [("storagetank", (10, 10, 50, 40))],
    [("ship", (5, 40, 25, 60)), ("airplane", (30, 5, 75, 35))],
]


DOTA_POLYGONS = [
    (DOTA_V2_CLASSES[1], (100, 100, 300, 100, 300, 250, 100, 250)),
    (DOTA_V2_CLASSES[10], (850, 500, 990, 500, 990, 700, 850, 700)),
]


def write_dota(root: Path, size: tuple[int, int] = (800, 1000), count: int = 2, polygons=DOTA_POLYGONS) -> Path:
    """DOTA layout: images/<name>.png (large: cut into 896 patches), labelTxt/<name>.txt polygons with headers."""
    rng = np.random.default_rng(4)
    for index in range(count):
        name = f"P{index:04d}"
        _save(root / "images" / f"{name}.png", _image(rng, *size))
        write_dota_labels(root, name, polygons)
    return root


def write_dota_labels(root: Path, name: str, polygons) -> None:
    """labelTxt/<name>.txt: headers, then ``x1 y1 ... x4 y4 class difficult`` per object."""
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    lines = ["imagesource:GoogleEarth", "gsd:0.5"]
    lines += [" ".join(f"{v:g}" for v in poly) + f" {cls} 0" for cls, poly in polygons]
    (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")

"""Scenes of any size as a Lightning ``predict`` over N devices (``rsam segment --devices N``, also under Slurm).

* Work items are tiles (every tile of every unfinished scene); Lightning splits them across ranks without repeats
  (``UnrepeatedDistributedSamplerWrapper`` in predict) and each rank's :class:`~rsam.lit.writers.TilePartWriter`
  writes its own tiles' probabilities as part files.
* After a barrier, rank 0 assembles each scene from its parts with the same blending, GeoTIFF writer and instance
  merge as the single-process path (:func:`rsam.geo.pipeline.segment_scene`), then removes the parts.
* Resume: a scene whose output GeoTIFF exists is skipped; a tile whose part exists is not predicted again. The parts
  folder holds a manifest of the settings; parts made with other settings are refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rsam.geo.pipeline import SegmentOptions, segment_scene
from rsam.geo.tiling import TileGrid, TileResult
from rsam.lit.writers import TilePartWriter, read_part
from rsam.preprocess import normalize, resize_image

log = logging.getLogger(__name__)


def parts_folder(raster: Path) -> Path:
    return raster.with_name(raster.name + ".parts")


class GeoTileDataset(Dataset):
    """Tiles still to predict: ``(scene index, tile)`` for unfinished scenes, tiles without a part file."""

    def __init__(self, jobs, open_scene, options: SegmentOptions, model_size: tuple[int, int], manifest: dict):
        self.jobs, self.open_scene, self.options, self.model_size = jobs, open_scene, options, model_size
        self._scenes: dict[int, object] = {}
        self.items: list[tuple[int, object]] = []
        self.pending_scenes: list[int] = []
        for index, (image, raster, _) in enumerate(jobs):
            if Path(raster).exists():
                log.info("%s exists: scene %s skipped", raster, image)
                continue
            self.pending_scenes.append(index)
            folder = parts_folder(Path(raster))
            _check_manifest(folder, {**manifest, "scene": str(image)})
            scene = self.scene(index)
            grid = TileGrid(scene.width, scene.height, options.tile, options.overlap)
            todo = [t for t in grid.tiles() if not (folder / f"{t.key}.npz").exists()]
            log.info("%s: %d of %d tiles to predict", image, len(todo), len(grid))
            self.items.extend((index, t) for t in todo)

    def scene(self, index: int):
        if index not in self._scenes:
            self._scenes[index] = self.open_scene(self.jobs[index][0])
        return self._scenes[index]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        index, tile = self.items[i]
        pixels = self.scene(index).read(tile.window)
        has_data = bool(pixels.valid.any())
        if has_data:
            image = normalize(resize_image(np.ascontiguousarray(pixels.rgb.transpose(1, 2, 0)), self.model_size))
        else:
            image = torch.zeros(3, *self.model_size)
        return {
            "image": image,
            "valid": torch.from_numpy(pixels.valid),
            "has_data": has_data,
            "scene": index,
            "key": tile.key,
        }


def _check_manifest(folder: Path, manifest: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise ValueError(f"{folder}: parts were made with other settings ({', '.join(changed)}); remove the folder")
    else:
        partial = path.with_name("manifest.json.partial")
        partial.write_text(json.dumps(manifest, indent=1))
        partial.replace(path)


class GeoPredictModule(pl.LightningModule):
    """Runs the model on tile batches through :class:`rsam.predict.Predictor`'s public API (official
    post-processing, resized to the tile size); tiles without valid pixels are not run."""

    def __init__(self, model, prompts: list[str], tile: int, unknown_out_of_vocab: bool = False, chunk_size: int = 4):
        super().__init__()
        self.model = model
        self.prompts, self.tile = list(prompts), tile
        self.unknown_out_of_vocab, self.chunk_size = unknown_out_of_vocab, chunk_size
        self.predictor = None

    def on_predict_start(self) -> None:
        from rsam.predict import Predictor

        self.predictor = Predictor(
            self.model, device=self.device, chunk_size=self.chunk_size, unknown_out_of_vocab=self.unknown_out_of_vocab
        )

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        from rsam.predict import postprocess

        size = len(batch["key"])
        probs = torch.zeros(size, len(self.prompts), self.tile, self.tile)
        for i in range(size):
            if bool(batch["has_data"][i]):
                logits = self.predictor.logits(batch["image"][i], self.prompts)
                probs[i] = postprocess(logits, (self.tile, self.tile))[0].cpu()
        return {"probs": probs}


class PartsRunner:
    """A tile runner that reads the tiles' part files (the assembly step)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, tiles) -> list[TileResult]:
        results = []
        for tile in tiles:
            path = self.folder / f"{tile.key}.npz"
            if not path.exists():
                raise FileNotFoundError(f"{path}: tile part missing (a rank did not finish); re-run to resume")
            valid, probs = read_part(path)
            results.append(TileResult(valid, probs))
        return results


def assemble(
    jobs, open_scene, prompts, options: SegmentOptions, instances: bool, pending: list[int], keep_parts: bool = False
) -> list[dict]:
    summaries = []
    for index in pending:
        image, raster, vectors = jobs[index]
        folder = parts_folder(Path(raster))
        with open_scene(image) as scene:
            summary = segment_scene(
                scene, PartsRunner(folder), prompts, raster, options, vectors=vectors, instances=instances
            )
        if not keep_parts:
            shutil.rmtree(folder)
        summaries.append(summary)
    return summaries


def run_geo_predict(args, model, jobs, options: SegmentOptions) -> dict | None:
    """The ``--devices`` path of ``rsam segment``; returns the summary on rank 0 (None elsewhere)."""
    from rsam.cli.cmd_segment import open_scene

    def opener(path):
        return open_scene(path, args)

    manifest = {
        "prompts": list(args.prompts),
        "tile": options.tile,
        "overlap": options.overlap,
        "bands": args.bands,
        "scale": args.scale,
        "stretch": args.stretch,
        "gsd": args.gsd,
        "model": str(args.model or args.golden),
    }
    dataset = GeoTileDataset(jobs, opener, options, tuple(model.config.image_size), manifest)
    result: dict = {"scenes": []}

    def finish(trainer=None):
        result["scenes"] = assemble(
            jobs, opener, args.prompts, options, args.instances, dataset.pending_scenes, args.keep_parts
        )

    if len(dataset) == 0:  # every tile already has its part (or every scene is done): assemble only
        finish()
        return {"tiles_predicted": 0, **result}
    devices, nodes = int(args.devices), int(args.num_nodes)
    writer = TilePartWriter(lambda index: parts_folder(Path(jobs[index][1])), on_finish=finish)
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if devices * nodes > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[writer],
    )
    module = GeoPredictModule(model, args.prompts, options.tile, bool(args.golden), args.chunk_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=0)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    log.info("rank %d wrote %d tile parts", trainer.global_rank, writer.written)
    if not trainer.is_global_zero:
        return None
    return {"tiles_predicted": len(dataset), "world_size": trainer.world_size, **result}

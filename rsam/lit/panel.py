"""Each validation epoch, a wandb image panel: prediction and ground-truth overlays for fixed validation samples.

The samples are the first ``num_samples`` valid ones of the (unshuffled) validation loader on global rank 0, so the
same images come back every epoch. Each panel entry is the image with the prediction (red) beside the image with
the ground truth (green), captioned with the expression.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from rsam.preprocess import IMAGENET_MEAN, IMAGENET_STD
from rsam.visualize import PALETTE, captioned, overlay_mask

PRED_COLOR, TRUTH_COLOR = PALETTE[0], PALETTE[1]
PANEL_KEY = "val/overlays"


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalised (3, H, W) tensor back to uint8 RGB (H, W, 3)."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    rgb = (image.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()
    return rgb.permute(1, 2, 0).numpy()


def overlay_pair(image: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor, text: str) -> np.ndarray:
    """[image + prediction | image + ground truth] with the expression as caption."""
    rgb = denormalize(image)
    pred_view = overlay_mask(rgb, pred.cpu().numpy().astype(bool), PRED_COLOR)
    truth_view = overlay_mask(rgb, truth.cpu().numpy().astype(bool), TRUTH_COLOR)
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    return captioned(np.concatenate([pred_view, gap, truth_view], axis=1), text)


class OverlayPanel(pl.Callback):
    def __init__(self, num_samples: int = 4):
        super().__init__()
        self.num_samples = int(num_samples)
        self._items: list[tuple[np.ndarray, str]] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._items = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0 or len(self._items) >= self.num_samples:
            return
        for i in torch.nonzero(batch["valid"]).flatten().tolist():
            if len(self._items) >= self.num_samples:
                break
            text = batch["meta"][i].get("text", "")
            self._items.append((overlay_pair(batch["image"][i], outputs["pred"][i], batch["mask"][i], text), text))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0 or not self._items:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                images, captions = zip(*self._items)
                logger.log_image(key=PANEL_KEY, images=list(images), caption=list(captions), step=trainer.global_step)
        self._items = []

"""``RemoteSAMModule``: the RemoteSAM network trained as in the official ``train.py``, as a LightningModule.

- loss: :class:`rsam.losses.SegmentationLoss` (0.9 weighted CE + 0.1 Dice);
- optimiser: AdamW (the fused kernel) over the official parameter groups (:mod:`rsam.lit.param_groups`), the text
  encoder's embeddings and top layers frozen;
- schedule: poly decay per optimisation step, ``lr * (1 - step / total_steps) ** power`` (power 0.9), total steps
  from the trainer (``estimated_stepping_batches``);
- validation/test: :class:`rsam.metrics.ReferringSegMetric` (oIoU, mIoU, Prec@0.5..0.9, synchronised across ranks,
  padding samples ignored), the mean per-sample loss (the official evaluation runs batch size 1), and on one-to-zero
  prompts the mean predicted-foreground fraction and the share of exactly empty predictions.

The hyperparameters are plain dicts (the model config's ``to_dict()`` and the optimisation section), so a Lightning
checkpoint rebuilds its model without the recipe.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from torchmetrics import MeanMetric

from rsam.lit.param_groups import OFFICIAL_TRAINED_TEXT_LAYERS, official_param_groups
from rsam.losses import OFFICIAL_CLASS_WEIGHTS, OFFICIAL_DICE_SMOOTH, OFFICIAL_DICE_WEIGHT, SegmentationLoss
from rsam.metrics import ReferringSegMetric
from rsam.models import RemoteSAMConfig, build_model

log = logging.getLogger(__name__)

ZERO_KIND = "one-to-zero"
DEFAULT_OPTIM = {
    "lr": 3e-5,
    "weight_decay": 1e-2,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "amsgrad": False,
    "poly_power": 0.9,
    "trained_text_layers": OFFICIAL_TRAINED_TEXT_LAYERS,
    "dice_weight": OFFICIAL_DICE_WEIGHT,
    "class_weights": OFFICIAL_CLASS_WEIGHTS,
    "dice_smooth": OFFICIAL_DICE_SMOOTH,
}


def poly_factor(step: int, total_steps: int, power: float) -> float:
    """The official per-iteration poly factor ``(1 - step / total) ** power``, clamped at 0 past the end."""
    return max(0.0, 1.0 - step / max(1, total_steps)) ** power


class EvalMetrics(torch.nn.Module):
    """The metrics of one evaluation stage (val or test)."""

    def __init__(self):
        super().__init__()
        self.referring = ReferringSegMetric()
        self.zero_fg_fraction = MeanMetric()
        self.zero_empty = MeanMetric()
        self.loss = MeanMetric()  # mean per-sample loss over every rank's valid samples

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kinds: list[str]) -> None:
        self.referring.update(pred, target, valid)
        zero = valid & torch.tensor([kind == ZERO_KIND for kind in kinds], dtype=torch.bool, device=valid.device)
        if zero.any():
            fractions = pred[zero].flatten(1).float().mean(1)
            self.zero_fg_fraction.update(fractions)
            self.zero_empty.update((fractions == 0).float())

    def compute(self) -> dict[str, float]:
        values = {name: float(value) for name, value in self.referring.compute().items() if name != "samples"}
        values["loss"] = float(self.loss.compute())
        if float(self.zero_fg_fraction.weight) > 0:  # synced on compute; absent when no one-to-zero prompt was seen
            values["zero_fg_fraction"] = float(self.zero_fg_fraction.compute())
            values["zero_empty_rate"] = float(self.zero_empty.compute())
        return values

    def reset(self) -> None:
        for metric in (self.referring, self.zero_fg_fraction, self.zero_empty, self.loss):
            metric.reset()


DEFAULT_RUNTIME = {"activation_checkpointing": False, "compile": False}


class RemoteSAMModule(pl.LightningModule):
    def __init__(
        self, model_config: dict[str, Any], optim: dict[str, Any] | None = None, runtime: dict[str, Any] | None = None
    ):
        """``runtime``: how the network runs (the recipe's ``model.activation_checkpointing`` / ``model.compile``)."""
        super().__init__()
        self.save_hyperparameters()
        self.optim = {**DEFAULT_OPTIM, **(optim or {})}
        unknown = sorted(set(self.optim) - set(DEFAULT_OPTIM))
        if unknown:
            raise ValueError(f"unknown optimisation settings: {unknown}")
        self.runtime = {**DEFAULT_RUNTIME, **(runtime or {})}
        unknown = sorted(set(self.runtime) - set(DEFAULT_RUNTIME))
        if unknown:
            raise ValueError(f"unknown model runtime settings: {unknown}")
        self.model = build_model(
            RemoteSAMConfig.from_dict(model_config),
            activation_checkpointing=bool(self.runtime["activation_checkpointing"]),
        )
        self.param_groups = official_param_groups(self.model, int(self.optim["trained_text_layers"]))
        self.criterion = SegmentationLoss(
            self.optim["dice_weight"], self.optim["class_weights"], self.optim["dice_smooth"]
        )
        self.val_metrics = EvalMetrics()
        self.test_metrics = EvalMetrics()

    @property
    def model_config(self) -> RemoteSAMConfig:
        return self.model.config

    def configure_model(self) -> None:
        """``model.compile``: ``torch.compile`` the network in place (``Module.compile`` keeps the state_dict keys)."""
        if self.runtime["compile"] and not getattr(self, "_compiled", False):
            self.model.compile()
            self._compiled = True

    def on_fit_start(self) -> None:
        """With ``model.activation_checkpointing`` on a CPU, memory comes first: jemalloc returns freed pages to
        the OS after a second unused (:func:`rsam.allocator.set_decay`) instead of keeping them for reuse, so the
        process's peak RSS stays near its live peak. Measured on the official configuration at batch 1: peak RSS 5.6 ->
        4.8 GB, step time 27.4 -> 38.2 s (the kernel zero-fills the returned pages again when they are reused)."""
        from rsam.allocator import CHECKPOINTING_DECAY_MS, set_decay

        if self.runtime["activation_checkpointing"] and self.device.type == "cpu":
            set_decay(CHECKPOINTING_DECAY_MS)

    def forward(self, images, input_ids, attention_mask):
        return self.model(images, input_ids, attention_mask)

    def _logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["image"], batch["input_ids"], batch["attention_mask"])

    # ---- training -----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.criterion(self._logits(batch), batch["mask"])
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The update, then the gradients are dropped at once (``set_to_none``) instead of at the next step's
        ``zero_grad``, which Lightning calls after the next forward: the forward then runs without last step's
        gradients in memory (0.78 GB for the official configuration). Accumulation is unaffected (this runs only at
        the end of an accumulation window); DeepSpeed keeps its gradients in its own buffers and clears them
        itself."""
        optimizer.step(closure=optimizer_closure)
        if not isinstance(self.trainer.strategy, DeepSpeedStrategy):
            optimizer.zero_grad(set_to_none=True)

    def make_optimizer(self, offload: bool = False) -> torch.optim.Optimizer:
        """AdamW over the official parameter groups: DeepSpeed's CPU AdamW when it offloads the optimizer, else
        PyTorch's fused AdamW kernel (CPU and CUDA: one pass over each tensor instead of ~8 elementwise passes with
        temporaries; the same update up to rounding)."""
        groups = self.param_groups.optimizer_groups(self.optim["weight_decay"])
        common = dict(
            lr=self.optim["lr"],
            betas=tuple(self.optim["betas"]),
            eps=self.optim["eps"],
            weight_decay=self.optim["weight_decay"],
        )
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, adamw_mode=True, **common)
        params = [p for group in groups for p in group["params"]]
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.AdamW(groups, amsgrad=self.optim["amsgrad"], fused=fused, **common)

    def configure_optimizers(self):
        from rsam.lit.strategies import offloads_optimizer

        # DeepSpeed runs the optimizer on the CPU when it offloads: its CPU AdamW
        optimizer = self.make_optimizer(offload=offloads_optimizer(self.trainer.strategy))
        total = int(self.trainer.estimated_stepping_batches)
        power = float(self.optim["poly_power"])
        log.info("poly schedule over %d optimisation steps (power %g), lr %g", total, power, self.optim["lr"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly_factor(step, total, power))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ---- evaluation -----------------------------------------------------------------------------------------------
    def _eval_step(self, batch: dict, metrics: EvalMetrics) -> dict:
        logits = self._logits(batch)
        pred = logits.argmax(1)
        valid = batch["valid"].to(pred.device)
        metrics.update(pred, batch["mask"], valid, [m.get("kind", "") for m in batch["meta"]])
        # the official evaluation loss is per sample (its val loader has batch size 1); padding samples go through
        # the criterion too, because ZeRO-3 requires the same module calls on every rank
        losses = torch.stack([self.criterion(one[None], target[None]) for one, target in zip(logits, batch["mask"])])
        if valid.any():
            metrics.loss.update(losses[valid])
        return {"pred": pred}

    def _log_eval(self, metrics: EvalMetrics, prefix: str) -> None:
        values = metrics.compute()
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "oIoU", sync_dist=False, rank_zero_only=False)
        metrics.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_eval(self.val_metrics, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_eval(self.test_metrics, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probs = self._logits(batch).softmax(1)
        return {"pred": probs.argmax(1), "prob": probs[:, 1], "batch": batch}

"""Throughput of every fit: samples/s, TFLOP/s, model FLOPs utilisation and peak memory per device.

:class:`TrainingThroughput` is Lightning's :class:`~lightning.pytorch.callbacks.ThroughputMonitor` (it computes the
rates over a sliding window and logs ``train|samples_per_sec``, ``train|device|flops_per_sec``,
``train|device|mfu``, ... to every logger, wandb included) with what it leaves to the user:

- ``flops_per_batch``: measured at setup, on every rank and before the strategy wraps the model (a meta-device
  network run later, on rank 0 alone, desynchronises DeepSpeed ZeRO-3's module trace), with ``measure_flops`` on a
  meta-device copy of the network, per sample (no memory, no compute): forward + loss + backward for training,
  forward only for validation/test; a batch costs its size times that (nothing in the network mixes samples);
- the peak FLOP/s of a device for MFU: Lightning's table for GPUs; on CPU, which it has no figure for, a dense
  matmul in the training dtype measured once at setup (so CPU MFU is a fraction of what this machine achieves on a
  large matmul, not of a datasheet figure);
- peak memory per device (``peak_memory_mib``): CUDA ``max_memory_allocated``, on CPU the process's peak RSS;
- the figures in the progress bar (``samples/s``, ``TFLOP/s``, ``MFU``, ``peak_mem_GiB``).
"""

from __future__ import annotations

import logging
import resource
import time

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

SEPARATOR = "|"


def batch_size(batch: dict) -> int:
    return int(batch["image"].shape[0])


def model_flops(config, batch: int, training: bool, loss_fn=None) -> int:
    """FLOPs of one forward (and, when ``training``, the loss and backward) of a RemoteSAM network at its image
    size, counted on the meta device (nothing is allocated or computed). Stochastic depth is counted as if every
    branch ran (the model's FLOPs, not one step's draw: rsam skips dropped branches, :class:`DropPath`)."""
    from rsam.models import build_model
    from rsam.models.swin import DropPath

    height, width = config.image_size
    with torch.device("meta"):
        model = build_model(config).train(training)
        for module in model.modules():
            if isinstance(module, DropPath):
                module.eval()
        images = torch.empty(batch, 3, height, width)
        ids = torch.ones(batch, config.max_tokens, dtype=torch.long)
        target = torch.zeros(batch, height, width, dtype=torch.long)

    def forward():
        return model(images, ids, torch.ones_like(ids))

    if not training:
        with torch.no_grad():
            return int(measure_flops(model, forward))
    loss = (lambda logits: loss_fn(logits, target)) if loss_fn is not None else torch.Tensor.sum
    return int(measure_flops(model, forward, loss))


def cpu_matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 3) -> float:
    """Achieved FLOP/s of an n x n matmul in ``dtype`` on this CPU (best of ``reps``, after one warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class TrainingThroughput(ThroughputMonitor):
    """``window_size``: batches the rates are averaged over (default: ``trainer.log_every_n_steps``, 2 to 20)."""

    def __init__(self, window_size: int | None = None):
        super().__init__(batch_size_fn=batch_size, separator=SEPARATOR)
        self.window_size = window_size
        self._flops: dict[bool, int] = {}  # FLOPs of one sample: training (forward + loss + backward) / forward

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.kwargs["window_size"] = self.window_size or min(20, max(2, int(trainer.log_every_n_steps)))
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        if self.available_flops is None and device.type == "cpu":
            dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
            self.available_flops = cpu_matmul_flops(dtype)
            log.info("MFU reference on CPU: a %s matmul at %.1f GFLOP/s", dtype, self.available_flops / 1e9)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops
        for training in (True, False):
            if training not in self._flops:
                loss = pl_module.criterion if training else None
                # counted at batch 2 (BatchNorm refuses one value per channel in training), per sample
                self._flops[training] = model_flops(pl_module.model_config, 2, training, loss) // 2

    def _flops_per_batch(self, pl_module, training: bool, size: int) -> int:
        return self._flops[training] * size

    @torch.inference_mode(False)
    def _update(self, trainer, pl_module, batch, iter_num: int) -> None:
        training = trainer.state.stage == RunningStage.TRAINING
        pl_module.flops_per_batch = self._flops_per_batch(pl_module, training, batch_size(batch))
        super()._update(trainer, pl_module, batch, iter_num)

    def _compute(self, trainer, iter_num: int | None = None) -> None:
        super()._compute(trainer, iter_num)
        if trainer._logger_connector.should_update_logs:
            memory = peak_memory_mib(trainer.strategy.root_device)
            stage = trainer.state.stage.value
            trainer._logger_connector.log_metrics({f"{stage}{SEPARATOR}peak_memory_mib": memory}, step=iter_num)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, *args)
        metrics = self._throughputs[RunningStage.TRAINING].compute()
        bar = {"peak_mem_GiB": peak_memory_mib(trainer.strategy.root_device) / 1024}
        if f"device{SEPARATOR}samples_per_sec" in metrics:
            bar["samples/s"] = metrics[f"device{SEPARATOR}samples_per_sec"] * trainer.world_size
        if f"device{SEPARATOR}flops_per_sec" in metrics:
            bar["TFLOP/s"] = metrics[f"device{SEPARATOR}flops_per_sec"] / 1e12
        if f"device{SEPARATOR}mfu" in metrics:
            bar["MFU"] = metrics[f"device{SEPARATOR}mfu"]
        for name, value in bar.items():
            pl_module.log(f"perf/{name}", float(value), prog_bar=True, logger=False, on_step=True, on_epoch=False)

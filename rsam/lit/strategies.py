"""Training strategies chosen by the recipe.

``CPUDeepSpeedStrategy`` lets DeepSpeed ZeRO run on CPU processes (gloo), so the DeepSpeed code paths — ZeRO-2/3
partitioning, CPU offload, bf16, checkpoint conversion and resume — are exercised by CI on machines without a GPU.
Lightning's ``DeepSpeedStrategy`` refuses a non-CUDA accelerator, validates CUDA device indices and passes
``root_device.index`` (None on CPU) as DeepSpeed's ``device_rank``; the subclass changes exactly those three things.
It is used only when the recipe asks for DeepSpeed and the accelerator is the CPU; on GPUs the stock strategy runs.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

PROCESS_GROUP_TIMEOUT = timedelta(seconds=300)  # a desynchronised rank fails in minutes, not the 30-minute default


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    strategy_name = "deepspeed_cpu"

    def setup_environment(self) -> None:
        # skip DeepSpeedStrategy's "only supported on CUDA GPUs" check; the rest is DDP's set-up
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # CPU devices carry no index, so there is no device-index selection to validate
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config, model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer, lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer


def deepspeed_strategy(accelerator: str, config: dict[str, Any]) -> DeepSpeedStrategy:
    """A DeepSpeed strategy from a full DeepSpeed config dict; the CPU variant when the accelerator is the CPU."""
    if accelerator == "cpu":
        return CPUDeepSpeedStrategy(config=config, process_group_backend="gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return DeepSpeedStrategy(config=config, timeout=PROCESS_GROUP_TIMEOUT)

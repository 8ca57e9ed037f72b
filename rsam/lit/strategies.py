"""Training strategies chosen by the recipe (``trainer.strategy``: ``ddp``, or ``deepspeed`` + the deepspeed section).

- :class:`RsamDeepSpeedStrategy`: Lightning's ``DeepSpeedStrategy`` that also honours ``trainer.sync_batchnorm``
  (Lightning's DeepSpeed strategy accepts the flag but never converts the BatchNorm layers; RemoteSAM's fusion blocks
  have BatchNorm, and the official run uses SyncBatchNorm).
- :class:`CPUDeepSpeedStrategy` lets DeepSpeed ZeRO run on CPU processes (gloo), so the DeepSpeed code paths (ZeRO-2/3
  partitioning, CPU offload, bf16, checkpoint conversion and resume) are exercised by CI on machines without a GPU.
  Lightning's strategy refuses a non-CUDA accelerator, validates CUDA device indices and passes ``root_device.index``
  (None on CPU) as DeepSpeed's ``device_rank`` (training and evaluation); the subclass changes exactly those things.
  It is used only when the recipe asks for DeepSpeed and there is no GPU; on GPUs the stock code path runs.
- :func:`consolidate_checkpoint`: a (sharded) DeepSpeed checkpoint folder -> one fp32 Lightning checkpoint file.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

log = logging.getLogger(__name__)

PROCESS_GROUP_TIMEOUT = timedelta(seconds=300)  # CPU (gloo): a desynchronised rank fails in minutes, not 30


class RsamDeepSpeedStrategy(DeepSpeedStrategy):
    strategy_name = "rsam_deepspeed"

    def setup(self, trainer) -> None:
        if self._layer_sync is not None and self.model is not None:
            self.model = self._layer_sync.apply(self.model)  # trainer.sync_batchnorm
        super().setup(trainer)

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        """Lightning's DeepSpeed save (every rank writes its files of the checkpoint folder), made atomic: the
        ranks write into ``.<name>.tmp-<pid of rank 0>`` next to ``filepath``; once all have written it (a barrier),
        rank 0 puts it in place of the previous folder (``replace_folder``); with node-local storage, so does each
        node's local rank 0. A failed write removes the temporary folder, keeps the previous checkpoint and raises
        one line naming it (a full disk included)."""
        from rsam.lit.checkpointing import replace_folder, temp_path, write_failure

        path = Path(self.broadcast(str(filepath)))
        tmp = Path(self.broadcast(str(temp_path(path))))
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            failure = write_failure(path, err)
            if failure is None:
                raise
            raise failure from err
        self.barrier("rsam_checkpoint_written")
        if self.is_global_zero:
            replace_folder(tmp, path)
        self.barrier("rsam_checkpoint_in_place")
        if self.num_nodes > 1:
            if self.local_rank == 0 and not self.is_global_zero and tmp.exists():  # node-local storage
                replace_folder(tmp, path)
            self.barrier("rsam_checkpoint_in_place_on_every_node")


class CPUDeepSpeedStrategy(RsamDeepSpeedStrategy):
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
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    def _initialize_deepspeed_inference(self, model) -> None:
        # `rsam validate|test|predict` with a DeepSpeed recipe: Lightning's version, with device_rank=local_rank
        import deepspeed
        from lightning.pytorch.strategies.deepspeed import remove_module_hooks

        config = {"train_micro_batch_size_per_gpu": 1}
        for key in ("fp16", "bf16", "data_types"):
            if key in self.config:
                config[key] = self.config[key]
        if self.zero_stage_3:
            config.update(
                zero_allow_untested_optimizer=self.config["zero_allow_untested_optimizer"],
                zero_optimization=self.config["zero_optimization"],
            )
        remove_module_hooks(model)
        self.model, _, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=config,
            model=model,
            optimizer=None,
            lr_scheduler=None,
            model_parameters=[],
            dist_init_required=False,
        )


def runs_on_cpu(accelerator: str) -> bool:
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def deepspeed_strategy(accelerator: str, config: dict[str, Any]) -> DeepSpeedStrategy:
    """A DeepSpeed strategy from a full DeepSpeed config dict; the CPU variant when there is no GPU to run on."""
    config = dict(config)  # Lightning writes batch size, accumulation and precision into it
    if runs_on_cpu(accelerator):
        return CPUDeepSpeedStrategy(config=config, process_group_backend="gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return RsamDeepSpeedStrategy(config=config)


def offloads_optimizer(strategy) -> bool:
    """True when DeepSpeed keeps the optimizer on the CPU (it then needs DeepSpeedCPUAdam, not torch's AdamW)."""
    if not isinstance(strategy, DeepSpeedStrategy) or not isinstance(strategy.config, dict):
        return False
    offload = strategy.config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


def is_deepspeed_checkpoint(path: str | Path) -> bool:
    """A Lightning DeepSpeed checkpoint is a folder (``latest`` + ``checkpoint/*_states.pt``)."""
    return Path(path).is_dir()


def consolidate_checkpoint(folder: str | Path, out_file: str | Path) -> Path:
    """Merge a DeepSpeed checkpoint folder (any ZeRO stage, any number of ranks) into one fp32 Lightning checkpoint
    (``state_dict`` + hyperparameters), which ``RemoteSAMModule.load_from_checkpoint`` loads strictly."""
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    folder, out_file = Path(folder), Path(out_file)
    if not (folder / "latest").is_file() and not (folder / "checkpoint").is_dir():
        raise FileNotFoundError(f"{folder} is not a DeepSpeed checkpoint folder (no 'latest' or 'checkpoint/')")
    convert_zero_checkpoint_to_fp32_state_dict(str(folder), str(out_file))
    log.info("consolidated DeepSpeed checkpoint %s -> %s", folder, out_file)
    return out_file

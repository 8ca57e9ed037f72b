"""Recipes select the strategy: every bundled recipe's DeepSpeed section (and the stage / offload / bf16 variants)
is accepted by DeepSpeed's own config class; impossible combinations are rejected naming the key; the trainer gets
the strategy the recipe asks for."""

from __future__ import annotations

import re

import pytest
from deepspeed.runtime.config import DeepSpeedConfig
from lightning.pytorch.strategies import DDPStrategy

from rsam.lit.build import build_trainer
from rsam.lit.strategies import CPUDeepSpeedStrategy
from rsam.recipes import RECIPE_DIR, RecipeError, deepspeed_config, load_recipe

BUNDLED = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
VARIANTS = [
    [],
    ["deepspeed.stage=3"],
    ["deepspeed.stage=2", "deepspeed.offload_optimizer=true"],
    ["deepspeed.stage=3", "deepspeed.offload_optimizer=true", "deepspeed.offload_parameters=true"],
    ["deepspeed.stage=3", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0"],
    ["deepspeed.stage=1", "trainer.precision=32-true", "trainer.accumulate_grad_batches=4"],
]


def _validated(recipe) -> DeepSpeedConfig:
    config = deepspeed_config(recipe)
    config["gradient_accumulation_steps"] = recipe.trainer.accumulate_grad_batches  # Lightning adds this one
    return DeepSpeedConfig(config)


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "as-is")
def test_every_recipe_deepspeed_section_passes_deepspeed_config(name, variant):
    recipe = load_recipe(name, ["trainer.strategy=deepspeed", *variant], check_files=False)
    checked = _validated(recipe)
    assert checked.zero_optimization_stage == recipe.deepspeed.stage
    assert checked.bfloat16_config.enabled == str(recipe.trainer.precision).startswith("bf16")
    assert checked.train_micro_batch_size_per_gpu == recipe.data.batch_size
    assert checked.gradient_accumulation_steps == recipe.trainer.accumulate_grad_batches
    offload = checked.zero_config.offload_optimizer
    assert (offload is not None and offload.device == "cpu") == recipe.deepspeed.offload_optimizer


def test_the_paper_recipe_runs_zero2_bf16():
    recipe = load_recipe("remotesam-270k", check_files=False)
    assert recipe.trainer.strategy == "deepspeed" and recipe.deepspeed.stage == 2
    checked = _validated(recipe)
    assert checked.zero_optimization_stage == 2 and checked.bfloat16_config.enabled


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer.strategy=deepspeed_stage_3"], "trainer.strategy"),  # one way to say it: strategy + section
        (["trainer.strategy=deepspeed", "deepspeed.stage=4"], "deepspeed.stage"),
        (["trainer.strategy=deepspeed", "deepspeed.offload_parameters=true"], "deepspeed.offload_parameters"),
        (["trainer.strategy=deepspeed", "deepspeed.offload_optimizer=true", "optim.amsgrad=true"], "optim.amsgrad"),
        (["trainer.strategy=deepspeed", "trainer.precision=64-true"], "trainer.precision"),
        (["trainer.strategy=deepspeed", "trainer.precision=16-mixed"], "trainer.precision"),  # fp16: GPUs only
        (["deepspeed.stages=2"], "deepspeed.stages"),
    ],
)
def test_bad_deepspeed_settings_name_the_key(overrides, key):
    with pytest.raises(RecipeError, match=re.escape(f"'{key}'")):
        load_recipe("demo", overrides, check_files=False)


@pytest.mark.parametrize("strategy, expected", [("ddp", DDPStrategy), ("deepspeed", CPUDeepSpeedStrategy)])
def test_the_trainer_gets_the_recipe_strategy(strategy, expected, tmp_path):
    recipe = load_recipe(
        "demo",
        [f"trainer.strategy={strategy}", "deepspeed.stage=3", f"trainer.default_root_dir={tmp_path}"],
        check_files=False,
    )
    trainer = build_trainer(recipe, use_wandb=False, fitting=True)
    assert type(trainer.strategy) is expected
    if strategy == "deepspeed":
        assert trainer.strategy.config["zero_optimization"]["stage"] == 3
        assert trainer.strategy._process_group_backend == "gloo"
    names = {type(c).__name__ for c in trainer.callbacks}
    assert {"StepSeeding", "RunFolderLock", "RunCheckpoint"} <= names
    assert type(trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"  # atomic writes with both strategies

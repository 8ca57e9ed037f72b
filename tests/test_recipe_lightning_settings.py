"""Lightning-level recipe settings are checked in the schema, before any work starts, and the error names the key
(issue 13, case 6: each of these used to fail with a traceback after the model was built, one after every step)."""

from __future__ import annotations

import pytest
import torch

from rsam.recipes import RecipeError, load_recipe

BAD = [
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.devices=abc", "trainer.devices"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.betas=[0.9,1.5]", "optim.betas"),
    ("optim.poly_power=-1", "optim.poly_power"),
    ("trainer.max_time=abc", "trainer.max_time"),
    ("checkpoint.save_top_k=-5", "checkpoint.save_top_k"),
    ("checkpoint.save_last=false", "checkpoint.save_last"),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("trainer.precision=17", "trainer.precision"),
    ("trainer.accelerator=quantum", "trainer.accelerator"),
]


@pytest.mark.parametrize("override, key", BAD, ids=[override for override, _ in BAD])
def test_bad_lightning_setting_names_its_key(override, key):
    with pytest.raises(RecipeError, match=rf"recipe key '{key}'"):
        load_recipe("demo", [override], check_files=False)


@pytest.mark.parametrize(
    "override",
    [
        "trainer.devices=-1",
        "trainer.devices=2",
        "trainer.devices='0,1'",
        "trainer.limit_train_batches=3",
        "trainer.limit_train_batches=0.5",
        "trainer.max_time=00:12:00:00",
        "checkpoint.save_top_k=-1",
        "optim.poly_power=0",
        "trainer.val_check_interval=0.25",
    ],
)
def test_valid_lightning_settings_pass(override):
    load_recipe("demo", [override], check_files=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_on_a_machine_without_one():
    with pytest.raises(RecipeError, match="recipe key 'trainer.accelerator': 'gpu', but this machine has no CUDA"):
        load_recipe("demo", ["trainer.accelerator=gpu"])
    load_recipe("demo", ["trainer.accelerator=gpu"], check_files=False)  # written here, run on a GPU machine

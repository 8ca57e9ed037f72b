"""Recipe schema: bundled recipes load; unknown keys, wrong types and impossible combinations are rejected, naming
the key; dotted overrides apply."""

import re
import subprocess
import sys
import time

import pytest

from rsam.recipes import RECIPE_DIR, RecipeError, load_recipe, model_config

BUNDLED = ("demo", "remotesam-270k", "finetune")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_recipes_are_valid(name):
    recipe = load_recipe(name, check_files=False)
    cfg = model_config(recipe)
    assert 0 < recipe.optim.trained_text_layers <= cfg.text.num_layers


def test_paper_recipe_values():
    recipe = load_recipe("remotesam-270k", check_files=False)
    cfg = model_config(recipe)
    assert cfg.image_size == (896, 896) and cfg.swin.window_size == 12 and cfg.swin.depths == (2, 2, 18, 2)
    assert cfg.text.hidden_size == 768 and cfg.text.num_layers == 12
    assert recipe.optim.lr == 3e-5 and recipe.optim.poly_power == 0.9 and recipe.optim.trained_text_layers == 10
    assert (recipe.trainer.devices, recipe.data.batch_size, recipe.trainer.max_epochs) == (8, 2, 40)
    assert recipe.trainer.strategy == "deepspeed" and recipe.deepspeed.stage == 2
    assert recipe.trainer.precision == "bf16-mixed"
    assert recipe.trainer.sync_batchnorm and recipe.checkpoint.monitor == "val/oIoU"


def test_demo_recipe_uses_minilm_and_its_data_folder():
    recipe = load_recipe("demo", check_files=False)
    assert recipe.init.text_encoder == "minilm" and recipe.trainer.accelerator == "cpu"
    assert str(recipe.data.dirs[0]).endswith("/demo")


def test_dotted_overrides_apply_and_keep_types():
    recipe = load_recipe("demo", ["trainer.max_steps=7", "optim.lr=0.01", "data.dirs=[a,b]"], check_files=False)
    assert recipe.trainer.max_steps == 7 and recipe.optim.lr == 0.01 and list(recipe.data.dirs) == ["a", "b"]


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["optim.lrr=0.1"], "optim.lrr", "Did you mean: 'lr'"),  # misspelt: named, with the closest key suggested
        (["trainer.max_step=3"], "trainer.max_step", "Did you mean one of: 'max_steps'"),
        (["modle.image_size=[64,64]"], "modle", "Did you mean: 'model'"),
        (["optim.lr=fast"], "optim.lr", "Float"),  # wrong type
        (["trainer.max_steps=1.5"], "trainer.max_steps", "Integer"),
        (["data.cache_decoded=maybe"], "data.cache_decoded", "bool"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, key, words):
    with pytest.raises(RecipeError) as err:
        load_recipe("demo", overrides, check_files=False)
    assert f"'{key}'" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer.strategy=deepspeed_stage_2"], "trainer.strategy"),  # strategy: deepspeed + deepspeed.stage
        (["trainer.precision=16-mixed"], "trainer.precision"),  # fp16 does not run on CPU
        (["optim.trained_text_layers=7"], "optim.trained_text_layers"),  # MiniLM has 6 layers
        (["model.text.hidden_size=768"], "model.text.hidden_size"),  # does not match the MiniLM weights
        (["init.weights=/tmp"], "init.text_encoder"),  # two sources for the text encoder
        (["data.num_workers=2"], "data.cache_decoded"),
        (["trainer.max_steps=-1"], "trainer.max_steps"),  # no length for the poly schedule
        (["model.swin.num_heads=[3,2,4,8]"], "model"),  # 32 channels / 3 heads
        (["wandb.mode=cloud"], "wandb.mode"),
        (["data.dirs=[/nonexistent/shards]"], "data.dirs[0]"),
    ],
)
def test_impossible_combinations_name_the_key(overrides, key):
    with pytest.raises(RecipeError, match=re.escape(f"'{key}'")):
        load_recipe("demo", overrides)


def test_missing_required_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("trainer:\n  max_steps: 3\n")
    with pytest.raises(RecipeError, match="'data.dirs'"):
        load_recipe(path, check_files=False)


def test_bad_override_syntax():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe("demo", ["trainer.max_steps"], check_files=False)


def test_cli_rejects_a_bad_recipe_before_any_work(tmp_path):
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsam.cli.main",
            "fit",
            "--config",
            "demo",
            "optim.lrr=1",
            f"trainer.default_root_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "'optim.lrr'" in result.stderr and "Did you mean: 'lr'" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was created
    assert time.time() - started < 60


def test_recipe_dir_holds_the_three_recipes():
    assert {p.stem for p in RECIPE_DIR.glob("*.yaml")} >= set(BUNDLED)

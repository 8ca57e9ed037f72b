"""A tiny recipe (same architecture, 64 px, 2-layer text encoder) over a synthetic shard set, and a CLI runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.shard_utils import subprocess_env

from rsam.data.synthetic import write_synthetic_dataset

TINY_RECIPE = """
name: tiny
seed: 7
model:
  image_size: [64, 64]
  swin: {{embed_dim: 8, depths: [1, 1, 1, 1], num_heads: [1, 1, 2, 2], window_size: 4, drop_path_rate: 0.0}}
  text: {{hidden_size: 16, num_layers: 2, num_heads: 2, intermediate_size: 32, max_position_embeddings: 32}}
data: {{dirs: ["{data}"], batch_size: 2, num_workers: 0, samples_per_rank: 4, test_split: val}}
optim: {{lr: 1.0e-3, trained_text_layers: 1}}
trainer: {{accelerator: cpu, devices: 1, max_steps: 4, log_every_n_steps: 1, num_sanity_val_steps: 0,
          enable_progress_bar: false, default_root_dir: "{run}"}}
wandb: {{panel_samples: 2, project: tiny}}
"""


def tiny_setup(root: Path) -> tuple[Path, Path]:
    """(recipe path, run folder): 8 training and 5 validation samples (odd: the last batch is short)."""
    data = root / "data"
    write_synthetic_dataset(data, {"train": [8], "val": [5]}, image_size=24)
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.format(data=data, run=root / "run"))
    return recipe, root / "run"


def rsam_cli(*args: str, timeout: int = 240) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run ``python -m rsam.cli.main ARGS``; returns the process and its last stdout line parsed as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "rsam.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result, json.loads(lines[-1]) if lines else None


def assert_exports_to_fp32(checkpoint: Path, recipe: Path, out: Path) -> None:
    """``rsam export CHECKPOINT`` writes config.json + an fp32 model.safetensors with every key and shape of the
    recipe's architecture, loaded strictly, holding trained weights (not the initial ones)."""
    import torch
    from safetensors.torch import load_file

    from rsam.checkpoint import load_model
    from rsam.lit.build import build_module
    from rsam.recipes import load_recipe

    result, exported = rsam_cli("export", str(checkpoint), "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    weights = load_file(str(out / "model.safetensors"))
    fresh = build_module(load_recipe(recipe), initialise=False).model.state_dict()
    assert set(weights) == set(fresh) and all(weights[k].shape == fresh[k].shape for k in fresh)
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    model = load_model(out)  # strict: every key and shape of the recipe's architecture
    assert sum(p.numel() for p in model.parameters()) == exported["parameters"]
    trained = [k for k in fresh if fresh[k].is_floating_point() and not torch.equal(fresh[k], weights[k])]
    assert len(trained) > len(fresh) // 2  # the export holds the trained weights, not the initial ones

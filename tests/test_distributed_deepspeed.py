"""DeepSpeed ZeRO selected by the recipe, run for real: 2-process CPU fits (gloo, the CPU strategy shim) for ZeRO-2,
ZeRO-3 and ZeRO-2 with CPU optimizer offload + bf16; each writes a sharded DeepSpeed checkpoint folder, which
``rsam export`` merges into one fp32 ``model.safetensors`` that loads strictly. The first DeepSpeed run on a machine
compiles DeepSpeed's CPU ops (shm_comm about 60 s, cpu_adam about 120 s; cached in ~/.cache/torch_extensions)."""

from __future__ import annotations

import pytest
import torch
from helpers.lit_runs import rsam_cli, tiny_setup
from safetensors.torch import load_file

from rsam.checkpoint import load_model
from rsam.lit.build import build_module
from rsam.recipes import load_recipe

ZERO_RUNS = {
    "zero2": ["deepspeed.stage=2"],
    "zero3": ["deepspeed.stage=3"],
    "zero2-offload-bf16": ["deepspeed.stage=2", "deepspeed.offload_optimizer=true", "trainer.precision=bf16-mixed"],
}


def _size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("zero"))[0]


@pytest.mark.parametrize("name", sorted(ZERO_RUNS))
def test_two_process_zero_fit_exports_to_one_fp32_file(name, recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    run = tmp_path / "run"
    result, summary = rsam_cli(
        "fit",
        "--config",
        str(recipe),
        "--no-wandb",
        "trainer.devices=2",
        "trainer.strategy=deepspeed",
        *ZERO_RUNS[name],
        f"trainer.default_root_dir={run}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert summary["step"] == 4 and summary["metrics"]["train/loss"] > 0

    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and (last / "latest").is_file()  # a DeepSpeed checkpoint folder, one shard per rank
    prefix = "bf16_" if "bf16" in name else ""  # DeepSpeed names bf16 optimizer shards bf16_zero_pp_rank_*
    shards = sorted(p.name for p in (last / "checkpoint").glob("*zero_pp_rank_*_optim_states.pt"))
    assert shards == [f"{prefix}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)]
    if name == "zero3":  # the weights themselves are partitioned: one model-states file per rank
        assert len(list((last / "checkpoint").glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))) == 2

    out = tmp_path / "export"
    result, exported = rsam_cli("export", str(last), "--out", str(out), timeout=300)
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

    with capsys.disabled():
        print(
            f"\n[{name}] DeepSpeed checkpoint {_size(last) / 1e6:.2f} MB -> exported fp32 "
            f"{_size(out / 'model.safetensors') / 1e6:.2f} MB"
        )

"""DeepSpeed ZeRO selected by the recipe, run for real: a 2-process CPU fit (gloo, the CPU strategy shim) with ZeRO-2,
CPU optimizer offload and bf16 writes a sharded DeepSpeed checkpoint folder, which ``rsam export`` merges into one fp32
``model.safetensors`` that loads strictly (plain ZeRO-2 and ZeRO-3 folders are exported the same way at the end of the
DeepSpeed chain in ``tests/test_resume_exact.py``). The first DeepSpeed run on a machine compiles DeepSpeed's CPU ops
(shm_comm about 60 s, cpu_adam about 120 s; cached in ~/.cache/torch_extensions)."""

from __future__ import annotations

import pytest
from helpers.lit_runs import assert_exports_to_fp32, rsam_cli, tiny_setup

ZERO_RUNS = {  # plain ZeRO-2 and ZeRO-3 fits are exported at the end of tests/test_resume_exact.py's DeepSpeed chain
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
    assert_exports_to_fp32(last, recipe, out)

    with capsys.disabled():
        print(
            f"\n[{name}] DeepSpeed checkpoint {_size(last) / 1e6:.2f} MB -> exported fp32 "
            f"{_size(out / 'model.safetensors') / 1e6:.2f} MB"
        )

"""Checks shared by the resume tests: running a hooked fit to its end, a checkpoint's training state (files and
DeepSpeed folders), bit-exact comparison, the data order a run recorded (``tests/helpers/fit_hooks.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from helpers.shard_utils import subprocess_env

from rsam.lit.strategies import consolidate_checkpoint

HOOKS = Path(__file__).resolve().parent / "fit_hooks.py"


def hooked_fit(recipe: Path, run: Path, record: Path, pause_at: int, *args: str) -> list[str]:
    """``rsam fit`` under ``fit_hooks.py`` (records the data order in ``record``, pauses at step ``pause_at`` for a
    signal; 0: never), offline, into ``run``; ``args``: dotted overrides and options."""
    return [sys.executable, str(HOOKS), str(record), str(pause_at), "fit", "--config", str(recipe), "--no-wandb",
            f"trainer.default_root_dir={run}", *args]  # fmt: skip


def start_fit(command: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**subprocess_env(), **env}
    )


def finish_fit(proc: subprocess.Popen, timeout: int = 240) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a started fit; killed (and the test failed by the timeout) if it hangs."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode, out, err


def run_fit(command: list[str], timeout: int = 240, **env: str) -> tuple[int, str, str]:
    return finish_fit(start_fit(command, **env), timeout)


def error_lines(stderr: str) -> list[str]:
    """The CLI's one-line error reports."""
    return [line for line in stderr.splitlines() if line.startswith("rsam fit: error:")]


def load_state(path: Path, scratch: Path) -> dict:
    """global_step, fp32 weights, optimizer and scheduler states of a Lightning checkpoint file, or of a DeepSpeed
    checkpoint folder (weights merged to fp32; the optimizer state is each rank's partition)."""
    if not path.is_dir():
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {key: state[key] for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers")}
    merged = torch.load(consolidate_checkpoint(path, scratch / "merged.ckpt"), map_location="cpu", weights_only=True)
    optimizer = []
    for shard in sorted((path / "checkpoint").glob("*optim_states.pt")):  # our own files: DeepSpeed pickles objects
        zero = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        if "fp32_flat_groups" in zero:  # ZeRO-3
            optimizer.append({"state": zero["optimizer_state_dict"], "fp32": zero["fp32_flat_groups"]})
        else:  # ZeRO-1/2
            fp32 = zero["single_partition_of_fp32_groups"]
            optimizer.append({"state": zero["base_optimizer_state"], "fp32": fp32})
    assert len(optimizer) == 2
    return {
        "global_step": merged["global_step"],
        "state_dict": merged["state_dict"],
        "optimizer_states": optimizer,
        "lr_schedulers": merged["lr_schedulers"],
    }


def saved_step(path: Path, scratch: Path) -> int:
    """The global_step of a Lightning checkpoint file or of a DeepSpeed checkpoint folder (any ZeRO stage)."""
    if path.is_dir():
        path = consolidate_checkpoint(path, scratch / "merged.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def read_order(record: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (record / f"order-rank{rank}.jsonl").read_text().splitlines()]


def assert_same_tensors(expected, actual, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, where
        if expected.is_floating_point():  # ZeRO-3 partitions end in uninitialised padding: NaN must match NaN there
            assert torch.equal(expected.isnan(), actual.isnan()), f"{where}: NaN at different places"
            expected, actual = expected.nan_to_num(0.0), actual.nan_to_num(0.0)
        assert torch.equal(expected, actual), f"{where}: max |diff| {(expected.float() - actual.float()).abs().max()}"
    elif isinstance(expected, dict):
        assert set(expected) == set(actual), where
        for key in expected:
            assert_same_tensors(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for i, (one, other) in enumerate(zip(expected, actual)):
            assert_same_tensors(one, other, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"

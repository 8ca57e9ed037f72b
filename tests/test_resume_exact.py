"""Exact resume: a 2-process CPU run stopped by SIGTERM after step k and resumed with ``--ckpt_path last`` ends with
the same weights, bit for bit, as an uninterrupted run of the same length, and saw the same batches in the same
order on every rank (mid-epoch stop, drop-path and dropout on, deterministic settings), with DDP and with DeepSpeed
ZeRO-3 (the CPU shim; weights compared after merging the shards to fp32, optimizer state shard by shard).

The runs are the real CLI in subprocesses (``tests/helpers/fit_hooks.py`` adds a data-order recorder and a pause
after step k, where the test sends SIGTERM to rank 0 as a scheduler would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.lit_runs import tiny_setup
from helpers.shard_utils import HELPERS, subprocess_env

from rsam.lit.strategies import consolidate_checkpoint

STEPS, STOP_AT = 6, 3  # 2 batches per epoch and rank: the stop is mid-epoch (epoch 1, after its first batch)
STRATEGIES = {"ddp": ["trainer.strategy=ddp"], "zero3": ["trainer.strategy=deepspeed", "deepspeed.stage=3"]}


def _command(recipe: Path, run: Path, record: Path, pause_at: int, strategy: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(HELPERS / "fit_hooks.py"),
        str(record),
        str(pause_at),
        "fit",
        "--config",
        str(recipe),
        "--no-wandb",
        "trainer.devices=2",
        f"trainer.max_steps={STEPS}",
        "trainer.deterministic=true",
        "model.swin.drop_path_rate=0.2",
        f"trainer.default_root_dir={run}",
        *STRATEGIES[strategy],
        *extra,
    ]


def _run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _stop_after(command: list[str], record: Path, timeout: int = 300) -> int:
    """Start the run, wait until every rank has finished step STOP_AT, send SIGTERM to rank 0; the exit code."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        deadline = time.time() + timeout
        while not all((record / f"paused-rank{rank}").is_file() for rank in (0, 1)):
            assert proc.poll() is None, proc.communicate()[1][-4000:]
            assert time.time() < deadline, "the run never reached the pause"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert "received SIGTERM; stopping after the current optimisation step" in stderr, stderr[-3000:]
    return proc.returncode


def _load(path: Path, scratch: Path) -> dict:
    """global_step, fp32 weights, optimizer and scheduler states of a Lightning checkpoint file, or of a DeepSpeed
    checkpoint folder (weights merged to fp32; the optimizer state is each rank's partition)."""
    if not path.is_dir():
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {key: state[key] for key in ("global_step", "state_dict", "optimizer_states", "lr_schedulers")}
    merged = torch.load(consolidate_checkpoint(path, scratch / "merged.ckpt"), map_location="cpu", weights_only=True)
    optimizer = []
    for shard in sorted((path / "checkpoint").glob("*optim_states.pt")):  # our own files: DeepSpeed pickles objects
        zero = torch.load(shard, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        optimizer.append({"state": zero["optimizer_state_dict"], "fp32": zero["fp32_flat_groups"]})
    assert len(optimizer) == 2
    return {
        "global_step": merged["global_step"],
        "state_dict": merged["state_dict"],
        "optimizer_states": optimizer,
        "lr_schedulers": merged["lr_schedulers"],
    }


def _order(record: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (record / f"order-rank{rank}.jsonl").read_text().splitlines()]


def _assert_same_tensors(expected, actual, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, where
        if expected.is_floating_point():  # ZeRO-3 partitions end in uninitialised padding: NaN must match NaN there
            assert torch.equal(expected.isnan(), actual.isnan()), f"{where}: NaN at different places"
            expected, actual = expected.nan_to_num(0.0), actual.nan_to_num(0.0)
        assert torch.equal(expected, actual), f"{where}: max |diff| {(expected.float() - actual.float()).abs().max()}"
    elif isinstance(expected, dict):
        assert set(expected) == set(actual), where
        for key in expected:
            _assert_same_tensors(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for i, (one, other) in enumerate(zip(expected, actual)):
            _assert_same_tensors(one, other, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_sigterm_and_resume_from_last_is_bit_identical(strategy, tmp_path):
    recipe, _ = tiny_setup(tmp_path)

    full, full_record = tmp_path / "full", tmp_path / "full-record"
    _run(_command(recipe, full, full_record, 0, strategy))

    stopped, first_record, second_record = tmp_path / "stopped", tmp_path / "first-record", tmp_path / "second-record"
    assert _stop_after(_command(recipe, stopped, first_record, STOP_AT, strategy), first_record) == 143
    last = stopped / "checkpoints" / "last.ckpt"
    assert _load(last, tmp_path)["global_step"] == STOP_AT  # saved by the SIGTERM path, after exactly step k

    result = _run(_command(recipe, stopped, second_record, 0, strategy, "--ckpt_path", "last"))
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == STEPS

    for rank in (0, 1):  # the data order: the stopped run + the resumed run = the uninterrupted run
        assert _order(first_record, rank) + _order(second_record, rank) == _order(full_record, rank), rank
    assert [line["step"] for line in _order(second_record, 0)] == list(range(STOP_AT, STEPS))

    expected = _load(full / "checkpoints" / "last.ckpt", tmp_path)
    actual = _load(last, tmp_path)
    assert actual["global_step"] == expected["global_step"] == STEPS
    assert len(expected["state_dict"]) > 100
    _assert_same_tensors(expected["state_dict"], actual["state_dict"], "state_dict")  # tensor by tensor, bit-exact
    _assert_same_tensors(expected["optimizer_states"], actual["optimizer_states"], "optimizer_states")
    _assert_same_tensors(expected["lr_schedulers"], actual["lr_schedulers"], "lr_schedulers")

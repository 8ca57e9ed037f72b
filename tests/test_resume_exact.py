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
import time
from pathlib import Path

import pytest
from helpers.lit_runs import tiny_setup
from helpers.resume_checks import assert_same_tensors, hooked_fit, load_state, read_order
from helpers.shard_utils import subprocess_env

STEPS, STOP_AT = 6, 3  # 2 batches per epoch and rank: the stop is mid-epoch (epoch 1, after its first batch)
STRATEGIES = {"ddp": ["trainer.strategy=ddp"], "zero3": ["trainer.strategy=deepspeed", "deepspeed.stage=3"]}


def _command(recipe: Path, run: Path, record: Path, pause_at: int, strategy: str, *extra: str) -> list[str]:
    overrides = ("trainer.devices=2", f"trainer.max_steps={STEPS}", "trainer.deterministic=true")
    return hooked_fit(
        recipe, run, record, pause_at, *overrides, "model.swin.drop_path_rate=0.2", *STRATEGIES[strategy], *extra
    )


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


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_sigterm_and_resume_from_last_is_bit_identical(strategy, tmp_path):
    recipe, _ = tiny_setup(tmp_path)

    full, full_record = tmp_path / "full", tmp_path / "full-record"
    _run(_command(recipe, full, full_record, 0, strategy))

    stopped, first_record, second_record = tmp_path / "stopped", tmp_path / "first-record", tmp_path / "second-record"
    assert _stop_after(_command(recipe, stopped, first_record, STOP_AT, strategy), first_record) == 143
    last = stopped / "checkpoints" / "last.ckpt"
    assert load_state(last, tmp_path)["global_step"] == STOP_AT  # saved by the SIGTERM path, after exactly step k

    result = _run(_command(recipe, stopped, second_record, 0, strategy, "--ckpt_path", "last"))
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == STEPS

    for rank in (0, 1):  # the data order: the stopped run + the resumed run = the uninterrupted run
        assert read_order(first_record, rank) + read_order(second_record, rank) == read_order(full_record, rank), rank
    assert [line["step"] for line in read_order(second_record, 0)] == list(range(STOP_AT, STEPS))

    expected = load_state(full / "checkpoints" / "last.ckpt", tmp_path)
    actual = load_state(last, tmp_path)
    assert actual["global_step"] == expected["global_step"] == STEPS
    assert len(expected["state_dict"]) > 100
    assert_same_tensors(expected["state_dict"], actual["state_dict"], "state_dict")  # tensor by tensor, bit-exact
    assert_same_tensors(expected["optimizer_states"], actual["optimizer_states"], "optimizer_states")
    assert_same_tensors(expected["lr_schedulers"], actual["lr_schedulers"], "lr_schedulers")

"""Exact resume: 2-process CPU runs stopped by SIGTERM or by an exception on one rank, and resumed with
``--ckpt_path last``, end with the same weights, bit for bit, as an uninterrupted run of the same length, and saw the
same batches in the same order on every rank (mid-epoch stops, drop-path and dropout on, deterministic settings; 2
batches per epoch and rank; validation, then ``best-*`` and ``last.ckpt``, at each epoch end). One chain of DDP runs
(issue 13, cases 4 and 7):

0. SIGTERM to rank 0 after step 1 (mid-epoch): every rank stops there, ``last.ckpt`` at step 1, exit 143;
1. resumed: a bad sample that only rank 1 draws, in the step after step 3 (mid-epoch, nothing on disk at step 3): rank 1
   writes ``last.ckpt`` at step 3 from its own replica, rank 0 (blocked in the gradient all-reduce) leaves at once, and
   the run exits 2 with the one error line, long before any collective timeout (5 minutes on CPU);
2. resumed: an exception inside rank 0's optimizer update after step 5 (the weights already hold step 6, the counters
   step 5): nothing is written, the log says why, and ``last.ckpt`` stays at step 4 (the epoch-end save), not a torn
   step 5/6;
3. resumed again: the run ends bit-identical to the uninterrupted one, with the same data order on every rank.

With DeepSpeed ZeRO-2 and ZeRO-3 (state partitioned over the ranks: no rank can save alone; ZeRO-3 after a SIGTERM
stop after step 2 and its resume; weights compared after merging the shards to fp32, optimizer state shard by shard),
the same bad sample on rank 1: every rank writes its part of ``last.ckpt`` at step 3 (rank 0 from its watcher thread,
with its BatchNorm statistics as they were before the forward pass of step 4 it had run), rank 1 puts the folder in
place, the resumed run ends bit-identical to the uninterrupted one, and its folder exports to one fp32 model.

The runs are the real CLI in subprocesses (``tests/helpers/fit_hooks.py`` adds a data-order recorder, a pause after
step k, where the test sends SIGTERM to rank 0 as a scheduler would, and the injected failures). The uninterrupted run
of each strategy is made once for the module."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.lit_runs import assert_exports_to_fp32, tiny_setup
from helpers.resume_checks import (
    assert_same_tensors,
    error_lines,
    hooked_fit,
    load_state,
    read_order,
    run_fit,
    saved_step,
)
from helpers.shard_utils import subprocess_env

STEPS, STOP_AT = 6, 3  # 2 batches per epoch and rank: the stop is mid-epoch (epoch 1, after its first batch)
NO_HANG_S = 120  # far below the 5-minute collective timeout: a run that hangs is killed and fails the test
STRATEGIES = {"ddp": ["trainer.strategy=ddp"], "zero3": ["trainer.strategy=deepspeed", "deepspeed.stage=3"]}
ZERO2 = ["trainer.strategy=deepspeed", "deepspeed.stage=2"]  # only for the failure with sharded state


def _command(recipe: Path, run: Path, record: Path, pause_at: int, strategy: str, *extra: str) -> list[str]:
    overrides = ("trainer.devices=2", f"trainer.max_steps={STEPS}", "trainer.deterministic=true")
    return hooked_fit(
        recipe,
        run,
        record,
        pause_at,
        *overrides,
        "model.swin.drop_path_rate=0.2",
        *{**STRATEGIES, "zero2": ZERO2}[strategy],
        *extra,
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(the recipe, strategy -> (last.ckpt, data-order record) of its uninterrupted run, made on first use)."""
    root = tmp_path_factory.mktemp("exact")
    recipe, _ = tiny_setup(root)
    done: dict[str, tuple[Path, Path]] = {}

    def full(strategy: str) -> tuple[Path, Path]:
        if strategy not in done:
            run, record = root / f"full-{strategy}", root / f"full-{strategy}-record"
            _run(_command(recipe, run, record, 0, strategy))
            done[strategy] = run / "checkpoints" / "last.ckpt", record
        return done[strategy]

    return recipe, full


def _assert_same_state(expected_last: Path, last: Path, scratch: Path) -> None:
    expected, actual = load_state(expected_last, scratch), load_state(last, scratch)
    assert actual["global_step"] == expected["global_step"] == STEPS
    assert len(expected["state_dict"]) > 100
    assert_same_tensors(expected["state_dict"], actual["state_dict"], "state_dict")  # tensor by tensor, bit-exact
    assert_same_tensors(expected["optimizer_states"], actual["optimizer_states"], "optimizer_states")
    assert_same_tensors(expected["lr_schedulers"], actual["lr_schedulers"], "lr_schedulers")


def _steps(record: Path, rank: int) -> list[int]:
    return [line["step"] for line in read_order(record, rank)]


def test_sigterm_then_an_exception_on_one_rank_save_the_last_completed_step_and_resume_exactly(uninterrupted, tmp_path):
    recipe, full = uninterrupted
    full_last, full_record = full("ddp")
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    stopped, records = tmp_path / "stopped", [tmp_path / f"record{i}" for i in range(3)]

    def fit(record: Path, *extra: str, **env: str) -> tuple[int, str]:
        rc, _, err = run_fit(_command(recipe, run, record, 0, "ddp", *extra), timeout=NO_HANG_S, **env)
        return rc, err

    # 0. SIGTERM to rank 0 after step 1 (mid-epoch): last.ckpt at exactly step 1, exit 143
    assert _stop_after(_command(recipe, run, stopped, 1, "ddp"), stopped) == 143
    assert load_state(last, tmp_path)["global_step"] == 1

    # 1. resumed; a bad sample on rank 1 only in the step after step 3 (mid-epoch, nothing on disk at step 3): saved
    # at step 3 by rank 1 itself, rank 0 torn down, one error line, exit 2
    rc, err = fit(records[0], "--ckpt_path", "last", RSAM_TEST_FAIL_AT="3", RSAM_TEST_FAIL_RANK="1")
    assert rc == 2, err[-4000:]
    (line,) = error_lines(err)
    assert "mask 10x10 differs from its image" in line and "Traceback" not in err
    assert f"ValueError on rank 1 ended the fit: saved {last} at step 3, the last completed step" in err
    assert "rank 0: stopping because rank 1 failed (ValueError: sample " in err
    assert saved_step(last, tmp_path) == 3
    assert not (run / ".rsam-fit.lock").exists()  # rank 0 released the run folder before it left

    # 2. a failure inside rank 0's optimizer update after step 5: nothing torn written, last.ckpt stays at step 4
    rc, err = fit(records[1], "--ckpt_path", "last", RSAM_TEST_FAIL_IN_UPDATE="5", RSAM_TEST_FAIL_RANK="0")
    assert rc == 2, err[-4000:]
    (line,) = error_lines(err)
    assert "failure inside the optimizer update" in line and "Traceback" not in err
    torn = re.search(r"rank 0: ValueError came during the optimizer update of step 6, after it had changed (\d+) of "
                     r"its (\d+) weight and optimizer-state entries \(the previous values exist nowhere in memory\), "
                     r"so no checkpoint is written; the newest checkpoint on disk, (.+) at step 4, stays the one to "
                     r"resume", err)  # fmt: skip
    assert torn is not None, err[-3000:]
    assert 100 < int(torn[1]) <= int(torn[2]) and torn[3] == str(last)  # at least every weight's step counter
    assert "rank 1: stopping because rank 0 failed" in err
    assert saved_step(last, tmp_path) == 4

    # 3. the resumed run ends bit-identical to the uninterrupted one, with its data order
    rc, err = fit(records[2], "--ckpt_path", "last")
    assert rc == 0, err[-4000:]
    for rank in (0, 1):
        assert _steps(stopped, rank) == [0]
        assert _steps(records[0], rank) == [1, 2, 3]  # step 3 started on both ranks, failed on rank 1
        assert _steps(records[1], rank) == [3, 4, 5]  # the update after step 5 failed on rank 0
        assert _steps(records[2], rank) == [4, 5]
        done = read_order(stopped, rank) + read_order(records[0], rank)[:2] + read_order(records[1], rank)[:1]
        assert done + read_order(records[2], rank) == read_order(full_record, rank), rank
    _assert_same_state(full_last, last, tmp_path)


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_an_exception_with_deepspeed_saves_every_ranks_part_and_resumes_exactly(strategy, uninterrupted, tmp_path):
    recipe, full = uninterrupted
    full_last, full_record = full(strategy)
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    records = [tmp_path / f"record{i}" for i in range(3)]
    resume = ("--ckpt_path", "last")

    done: list[dict] = []
    if strategy == "zero3":  # first a SIGTERM to rank 0 after step 2 (the DeepSpeed folder written atomically)
        assert _stop_after(_command(recipe, run, records[0], STOP_AT - 1, strategy), records[0]) == 143
        assert saved_step(last, tmp_path) == STOP_AT - 1
        done = [read_order(records[0], rank) for rank in (0, 1)]

    # a bad sample on rank 1 in the step after step 3 (mid-epoch; rank 0 runs its forward pass, so its BatchNorm
    # statistics hold part of step 4, then waits in a collective): every rank writes its part, rank 1 puts it in place
    command = _command(recipe, run, records[1], 0, strategy, *(resume if done else ()))
    rc, _, err = run_fit(command, timeout=NO_HANG_S, RSAM_TEST_FAIL_AT="3", RSAM_TEST_FAIL_RANK="1")
    assert rc == 2, err[-4000:]
    (line,) = error_lines(err)
    assert "mask 10x10 differs from its image" in line and "Traceback" not in err
    assert f"ValueError on rank 1 ended the fit: saved {last} at step 3, the last completed step" in err, err[-3000:]
    assert "rank 0: stopping because rank 1 failed (ValueError: sample " in err
    assert saved_step(last, tmp_path) == 3
    assert sorted(path.name for path in last.parent.iterdir() if path.name.startswith(".")) == []  # no temporary
    assert not (run / ".rsam-fit.lock").exists()

    rc, _, err = run_fit(_command(recipe, run, records[2], 0, strategy, *resume), timeout=NO_HANG_S)
    assert rc == 0, err[-4000:]
    for rank in (0, 1):
        first = done[rank] if done else []
        assert [line["step"] for line in first] == ([0, 1] if done else [])
        assert _steps(records[1], rank) == ([2, 3] if done else [0, 1, 2, 3])  # step 3 failed on rank 1
        assert _steps(records[2], rank) == [3, 4, 5]
        assert first + read_order(records[1], rank)[:-1] + read_order(records[2], rank) == read_order(full_record, rank)
    _assert_same_state(full_last, last, tmp_path)
    assert_exports_to_fp32(last, recipe, tmp_path / "export")  # the resumed DeepSpeed folder -> one fp32 model

"""An exception on one rank of a 2-process CPU DDP fit (issue 13, case 4), through the real CLI and Lightning's own
launcher, in one chain of runs on the tiny recipe (2 batches per epoch and rank; validation, then ``best-*`` and
``last.ckpt``, at each epoch end):

1. a bad sample that only rank 1 draws, in the step after step 3 (mid-epoch, nothing on disk at step 3): rank 1 writes
   ``last.ckpt`` at step 3 from its own replica, rank 0 (blocked in the gradient all-reduce) leaves at once, the run
   exits 2 with the one error line, long before any collective timeout (5 minutes on CPU);
2. resumed with ``--ckpt_path last``: an exception inside rank 0's optimizer update after step 5 (the weights already
   hold step 6, the counters step 5): nothing is written, the log says why, and ``last.ckpt`` stays at step 4 (the
   epoch-end save), not a torn step 5/6;
3. resumed again: the run finishes, every step trained once per rank after the last one on disk, and the final weights,
   optimizer and schedule are bit-identical to an uninterrupted 2-process run's.
"""

from __future__ import annotations

from pathlib import Path

from helpers.lit_runs import tiny_setup
from helpers.resume_checks import assert_same_tensors, error_lines, hooked_fit, load_state, read_order, run_fit

STEPS = 6
NO_HANG_S = 120  # far below the 5-minute collective timeout; a run that hangs is killed and fails the test


def _command(recipe: Path, run: Path, record: Path, *extra: str) -> list[str]:
    overrides = ("trainer.devices=2", "trainer.strategy=ddp", f"trainer.max_steps={STEPS}",
                 "trainer.deterministic=true", "model.swin.drop_path_rate=0.2")  # fmt: skip
    return hooked_fit(recipe, run, record, 0, *overrides, *extra)


def _fit(command: list[str], **env: str) -> tuple[int, str]:
    rc, _, err = run_fit(command, timeout=NO_HANG_S, **env)
    return rc, err


def _steps(record: Path, rank: int) -> list[int]:
    return [line["step"] for line in read_order(record, rank)]


def test_an_exception_on_one_rank_saves_the_last_completed_step_and_ends_every_rank(tmp_path):
    recipe, _ = tiny_setup(tmp_path)
    full, run = tmp_path / "full", tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    records = [tmp_path / f"record{i}" for i in range(4)]
    rc, err = _fit(_command(recipe, full, records[0]))
    assert rc == 0, err[-4000:]

    # 1. a bad sample on rank 1 only: saved at step 3 by rank 1 itself, rank 0 torn down, one error line, exit 2
    rc, err = _fit(_command(recipe, run, records[1]), RSAM_TEST_FAIL_AT="3", RSAM_TEST_FAIL_RANK="1")
    assert rc == 2, err[-4000:]
    (line,) = error_lines(err)
    assert "mask 10x10 differs from its image" in line and "Traceback" not in err
    assert f"ValueError on rank 1 ended the fit: saved {last} at step 3, the last completed step" in err
    assert "rank 0: stopping because rank 1 failed (ValueError: sample " in err
    assert load_state(last, tmp_path)["global_step"] == 3
    assert not (run / ".rsam-fit.lock").exists()  # rank 0 released the run folder before it left

    # 2. a failure inside rank 0's optimizer update after step 5: nothing torn written, last.ckpt stays at step 4
    rc, err = _fit(
        _command(recipe, run, records[2], "--ckpt_path", "last"), RSAM_TEST_FAIL_IN_UPDATE="5", RSAM_TEST_FAIL_RANK="0"
    )
    assert rc == 2, err[-4000:]
    (line,) = error_lines(err)
    assert "failure inside the optimizer update" in line and "Traceback" not in err
    assert (
        "rank 0: ValueError came during the optimizer update of step 6: the weights and optimizer state may be partly "
        f"updated, so no checkpoint is written; the newest checkpoint on disk, {last} at step 4, stays the one to "
        "resume" in err
    )
    assert "rank 1: stopping because rank 0 failed" in err
    assert load_state(last, tmp_path)["global_step"] == 4

    # 3. the resumed run finishes bit-identical to the uninterrupted one
    rc, err = _fit(_command(recipe, run, records[3], "--ckpt_path", "last"))
    assert rc == 0, err[-4000:]
    for rank in (0, 1):
        assert _steps(records[1], rank) == [0, 1, 2, 3]  # step 3 started on both ranks, failed on rank 1
        assert _steps(records[2], rank) == [3, 4, 5]  # the update after step 5 failed on rank 0
        assert _steps(records[3], rank) == [4, 5]
        done = read_order(records[1], rank)[:3] + read_order(records[2], rank)[:1] + read_order(records[3], rank)
        assert done == read_order(records[0], rank), rank  # the data order of the uninterrupted run
    assert_same_tensors(load_state(full / "checkpoints" / "last.ckpt", tmp_path), load_state(last, tmp_path), "ckpt")

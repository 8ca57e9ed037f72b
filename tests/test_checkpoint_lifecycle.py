"""The checkpoint lifecycle of ``rsam fit`` through the real CLI (issue 13, cases 1-4), on the tiny recipe
(2 batches per epoch; an epoch-end validation writes ``best-*`` then ``last.ckpt``):

- repeated interruptions: SIGTERM, a failing training step, SIGTERM again, each resumed with ``--ckpt_path last``
  (then ``auto``): one ``last.ckpt`` that always holds the newest state (never ``last-v1.ckpt``), and the final
  weights, optimizer and schedule are bit-identical to an uninterrupted run's (case 1, case 4);
- a fit killed with SIGKILL while ``last.ckpt`` is being rewritten leaves the previous ``last.ckpt`` whole; a second
  fit into the folder while the first is alive is refused in one line naming the holder; the next fit takes the
  stale lock over, removes the orphaned temporary file and resumes from the newest readable checkpoint (cases 2, 3);
- on a full disk (a 20 MB tmpfs as the run folder; needs root) the run stops with one line and the previous
  checkpoints stay intact; with space again it resumes and ends bit-identical (case 2);
- in-process: an unreadable checkpoint gives one line naming it; ``auto`` skips torn files, logging each with its
  reason; the lock's rules (live holder, dead holder, other host, the same Slurm job requeued).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.lit_runs import tiny_setup
from helpers.resume_checks import assert_same_tensors, error_lines, finish_fit, hooked_fit, run_fit, start_fit

from rsam.lit.checkpointing import (
    LOCK_NAME,
    TEMP_MARK,
    CheckpointError,
    CheckpointWriteError,
    RunFolderInUse,
    RunLock,
    atomic_save,
)

STEPS = 8
SCRATCH_KEYS = ("global_step", "state_dict", "optimizer_states", "lr_schedulers")


def _command(recipe: Path, run: Path, record: Path, pause_at: int, *extra: str) -> list[str]:
    overrides = (f"trainer.max_steps={STEPS}", "trainer.deterministic=true", "model.swin.drop_path_rate=0.2")
    return hooked_fit(recipe, run, record, pause_at, *overrides, *extra)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {path.name}:\n{proc.communicate()[1][-4000:]}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _sigterm_at_pause(command: list[str], record: Path) -> tuple[int, str]:
    proc = start_fit(command)
    _wait_for(record / "paused-rank0", proc)
    os.kill(proc.pid, signal.SIGTERM)
    rc, _, err = finish_fit(proc)
    return rc, err


def _state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: state[key] for key in SCRATCH_KEYS}


def _steps(record: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (record / "order-rank0.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    recipe, _ = tiny_setup(root)
    full = root / "full"
    rc, _, err = run_fit(_command(recipe, full, root / "full-record", 0))
    assert rc == 0, err[-4000:]
    return recipe, root, _state(full / "checkpoints" / "last.ckpt")


def test_repeated_interruptions_keep_one_last_ckpt_and_resume_exactly(tiny):
    recipe, root, expected = tiny
    run, last = root / "repeated", root / "repeated" / "checkpoints" / "last.ckpt"
    records = [root / f"repeated-record{i}" for i in range(4)]

    rc, err = _sigterm_at_pause(_command(recipe, run, records[0], 3), records[0])
    assert rc == 143, err[-3000:]
    assert _state(last)["global_step"] == 3

    # case 4: an exception in the step after step 5, after its forward pass (which changed the BatchNorm statistics)
    # and backward pass, before the optimizer changes anything: last.ckpt at step 5, exit non-zero with one line
    command = _command(recipe, run, records[1], 0, "--ckpt_path", "last")
    rc, _, err = run_fit(command, RSAM_TEST_FAIL_BEFORE_UPDATE="5")
    assert rc == 2, err[-3000:]
    assert len(error_lines(err)) == 1 and "gradient check before the optimizer update" in error_lines(err)[0]
    assert f"saved {last} at step 5, the last completed step" in err
    assert _state(last)["global_step"] == 5

    rc, err = _sigterm_at_pause(_command(recipe, run, records[2], 6, "--ckpt_path", "last"), records[2])
    assert rc == 143, err[-3000:]
    assert _state(last)["global_step"] == 6  # case 1: the resumed run rewrote last.ckpt itself

    rc, out, err = run_fit(_command(recipe, run, records[3], 0, "--ckpt_path", "auto"))
    assert rc == 0, err[-3000:]
    assert json.loads(out.splitlines()[-1])["step"] == STEPS
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]  # never last-v1.ckpt
    assert not list(run.rglob(f"*{TEMP_MARK}*")) and not (run / LOCK_NAME).exists()
    # each step trained exactly once over the four processes (the failed step 5 again after the resume)
    trained = _steps(records[0]) + _steps(records[1]) + _steps(records[2]) + _steps(records[3])
    assert trained == [0, 1, 2, 3, 4, 5, 5, 6, 7]
    assert_same_tensors(expected, _state(last), "checkpoint")  # bit-identical to the uninterrupted run


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode == 0


def _fill(folder: Path, keep_free: int) -> Path:
    """Fill the file system of ``folder`` until ``keep_free`` bytes are left."""
    filler = folder / "filler.bin"
    stats = os.statvfs(folder)
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - keep_free))
    return filler


def test_kill_mid_write_concurrent_fit_stale_lock_and_full_disk(tiny, tmp_path):
    recipe, root, expected = tiny
    disk = tmp_path / "disk"
    on_tmpfs = _mount_tmpfs(disk, "40m")  # room for 4 checkpoints of the tiny model (6.7 MB each)
    keep_all = "checkpoint.save_top_k=-1"  # every epoch's best-* stays: the resume points below are certain
    try:
        run = disk / "run" if on_tmpfs else tmp_path / "run"
        checkpoints, last = run / "checkpoints", run / "checkpoints" / "last.ckpt"
        record = [tmp_path / f"record{i}" for i in range(4)]

        # a fit stalls in the middle of rewriting last.ckpt at step 4 (the temporary file is written, not renamed)
        first = start_fit(_command(recipe, run, record[0], 0, keep_all), RSAM_TEST_STALL_WRITE="4")
        _wait_for(record[0] / "stalled", first)
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()

        # case 3: a second fit into the same folder is refused while the first is alive
        rc, _, err = run_fit(_command(recipe, run, record[1], 0, keep_all, "--ckpt_path", "auto"))
        assert rc == 2, err[-3000:]
        (line,) = error_lines(err)
        assert f"run folder {run} is in use by another fit (pid {first.pid} on host {socket.gethostname()}" in line

        # case 2: SIGKILL mid-write leaves the previous last.ckpt whole, and an orphaned temporary file
        first.kill()
        first.wait(timeout=30)
        (orphan,) = checkpoints.glob(f".last.ckpt{TEMP_MARK}*")
        assert _state(last)["global_step"] == 2
        best4 = checkpoints / "best-epoch001-step000004.ckpt"  # written before last.ckpt at the same step
        assert _state(best4)["global_step"] == 4

        # the next fit takes the stale lock over, removes the orphan and resumes from the newest readable checkpoint;
        # on the tmpfs, the disk is then filled (at its pause after step 5) so that the save at step 6 cannot fit
        resumed = start_fit(_command(recipe, run, record[2], 5, keep_all, "--ckpt_path", "auto"))
        _wait_for(record[2] / "paused-rank0", resumed)
        filler = _fill(disk, keep_free=256 * 1024) if on_tmpfs else None
        (record[2] / "released").write_text("test")
        rc, _, err = finish_fit(resumed)
        assert f"taking over the stale lock {run / LOCK_NAME} (pid {first.pid}" in err
        assert f"removing {orphan}" in err and not orphan.exists()
        assert f"--ckpt_path auto: resuming from {best4}" in err
        if on_tmpfs:
            assert rc == 2, err[-3000:]
            (line,) = error_lines(err)
            assert line.startswith("rsam fit: error: no space left on the device to write checkpoint ")
            assert str(checkpoints) in line
            assert not list(run.rglob(f"*{TEMP_MARK}*"))  # the failed write removed its temporary file
            # every checkpoint still reads, none holds the failed step 6; last.ckpt is the one the resumed run wrote
            # at step 4 (at its start, before the disk was filled)
            assert {_state(path)["global_step"] for path in checkpoints.glob("*.ckpt")} == {2, 4}
            assert _state(last)["global_step"] == 4
            filler.unlink()
            rc, _, err = run_fit(_command(recipe, run, record[3], 0, keep_all, "--ckpt_path", "auto"))
        assert rc == 0, err[-3000:]
        assert _steps(record[0])[-1] == 3 and _steps(record[3 if on_tmpfs else 2])[-1] == STEPS - 1
        assert_same_tensors(expected, _state(last), "checkpoint")
        assert not (run / LOCK_NAME).exists()
    finally:
        if on_tmpfs:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    if not on_tmpfs:
        pytest.skip("kill, lock and stale-lock checks passed; the full-disk part needs root (mount -t tmpfs)")


# ---- in-process ------------------------------------------------------------------------------------------------
def _tiny_checkpoint(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"global_step": step, "state_dict": {"w": torch.full((4,), float(step))}}, path)
    return path


def test_a_failed_write_keeps_the_previous_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = _tiny_checkpoint(tmp_path / "last.ckpt", 1)
    before = path.read_bytes()

    class Disk(OSError):
        pass

    def failing_save(obj, handle):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("PytorchStreamWriter failed writing file") from OSError(28, "No space left on device")

    monkeypatch.setattr("rsam.lit.checkpointing.torch.save", failing_save)
    with pytest.raises(CheckpointWriteError, match=f"no space left on the device to write checkpoint {path}; the prev"):
        atomic_save({"global_step": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_unreadable_checkpoints_one_line_and_auto_skips_them(tmp_path, caplog, capsys):
    from rsam.cli.main import main as rsam_main
    from rsam.lit.build import resolve_ckpt_path
    from rsam.recipes import load_recipe

    recipe = load_recipe("demo", [f"trainer.default_root_dir={tmp_path}"], check_files=False)
    checkpoints = tmp_path / "checkpoints"
    best = _tiny_checkpoint(checkpoints / "best-epoch000-step000002.ckpt", 2)
    last = _tiny_checkpoint(checkpoints / "last.ckpt", 3)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # torn
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"")  # 0 bytes
    os.utime(best, (1000, 1000))
    os.utime(last, (2000, 2000))
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt_path(recipe, "auto") == str(best)  # the newest that reads
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert skipped == [
        f"--ckpt_path auto: skipping checkpoint {hpc}: empty file (0 bytes)",
        f"--ckpt_path auto: skipping checkpoint {last}: truncated or not a torch checkpoint "
        f"({last.stat().st_size} bytes, no zip directory at its end)",
    ]
    with pytest.raises(CheckpointError, match=f"--ckpt_path last: checkpoint {last}: truncated"):
        resolve_ckpt_path(recipe, "last")
    not_lightning = tmp_path / "weights.ckpt"
    torch.save({"w": torch.zeros(2)}, not_lightning)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        resolve_ckpt_path(recipe, str(not_lightning))
    # through the CLI: one line naming the file, exit code 2, before any model is built
    capsys.readouterr()
    args = ["fit", "--no-wandb", "--ckpt_path", "last", f"trainer.default_root_dir={tmp_path}"]
    assert rsam_main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"rsam fit: error: --ckpt_path last: checkpoint {last}: truncated or not a torch checkpoint "
        f"({last.stat().st_size} bytes, no zip directory at its end)"
    ]


def test_the_run_folder_lock(tmp_path, monkeypatch, caplog):
    lock = RunLock(tmp_path)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        record = {"pid": holder.pid, "host": socket.gethostname(), "process_start": None, "slurm_job": None}
        (tmp_path / LOCK_NAME).write_text(json.dumps(record))
        with pytest.raises(RunFolderInUse, match=f"in use by another fit \\(pid {holder.pid} on host"):
            lock.acquire()
        (tmp_path / LOCK_NAME).write_text(json.dumps({**record, "host": "elsewhere"}))
        with pytest.raises(RunFolderInUse, match="on host elsewhere"):  # cannot be checked from here: refused
            lock.acquire()
        monkeypatch.setenv("SLURM_JOB_ID", "77")  # ... unless it is this very Slurm job, requeued
        (tmp_path / LOCK_NAME).write_text(json.dumps({**record, "host": "elsewhere", "slurm_job": "77"}))
        lock.acquire()
        lock.release()
        monkeypatch.delenv("SLURM_JOB_ID")
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))  # its holder is gone now: stale
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} (pid {holder.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_which_strategies_can_save_from_one_rank():
    """DDP replicas hold the whole state; ZeRO partitions, and a sharded optimizer, do not (case 4, several ranks)."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

    from rsam.lit.checkpointing import rank_local_save_problem

    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    class Sharded(torch.optim.SGD):
        def consolidate_state_dict(self):  # the interface of torch's ZeroRedundancyOptimizer
            pass

    def problem(strategy, optimizer=sgd):
        return rank_local_save_problem(SimpleNamespace(strategy=strategy, optimizers=[optimizer]))

    assert problem(DDPStrategy()) is None
    assert problem(DDPStrategy(), Sharded(sgd.param_groups[0]["params"], lr=0.1)) == (
        "the optimizer state is sharded over the ranks, and one rank cannot save alone"
    )
    for stage, what in ((1, "the optimizer state"), (2, "the optimizer state and gradients"),
                        (3, "the weights, gradients and optimizer state")):  # fmt: skip
        assert problem(DeepSpeedStrategy(config={"zero_optimization": {"stage": stage}})) == (
            f"DeepSpeed ZeRO stage {stage} partitions {what} over the ranks, and one rank cannot save alone"
        )
    assert "strategy FSDPStrategy may shard its state" in problem(FSDPStrategy())


@pytest.mark.parametrize("kind", ["fused", "foreach", "single"])
def test_the_step_start_puts_back_buffers_and_sees_any_optimizer_change(kind):
    """What a failure left (case 4): a forward pass changes BatchNorm statistics, which go back to their values at the
    step's start; the batch counters go back to the step's first batch (a whole accumulation window); any change the
    optimizer made (a first step creating its state, a whole update, an update stopped after one tensor) is seen,
    however PyTorch's AdamW runs (the fused kernel bumps only the step counters' versions)."""
    from types import SimpleNamespace

    from lightning.pytorch.loops.progress import _BatchProgress, _OptimizationProgress

    from rsam.lit.checkpointing import StepStart

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}[kind]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, **options)
    progress = _BatchProgress()
    loop = SimpleNamespace(batch_progress=progress, automatic_optimization=SimpleNamespace(
        optim_progress=_OptimizationProgress()))  # fmt: skip
    trainer = SimpleNamespace(global_step=0, optimizers=[optimizer], lightning_module=model,
                              fit_loop=SimpleNamespace(epoch_loop=loop))  # fmt: skip

    def batch(update: bool) -> None:
        progress.increment_ready()
        progress.increment_started()
        model(torch.randn(8, 3)).square().mean().backward()
        if update:
            optimizer.step()
            optimizer.zero_grad()
        progress.increment_processed()
        progress.increment_completed()

    start = StepStart()
    start.watch(model)  # the buffers are copied when a step's first forward pass begins
    start.record(trainer, model)
    batch(update=True)  # the first update creates AdamW's state
    assert start.changed(trainer)[0] > 0

    start.record(trainer, model)  # a step of 3 accumulated batches begins after 1 batch
    statistics = {name: buffer.clone() for name, buffer in model[1].named_buffers()}
    batch(update=False)
    batch(update=False)
    progress.increment_ready()
    progress.increment_started()  # the third batch fails before it finishes
    assert not torch.equal(model[1].running_mean, statistics["running_mean"])
    assert start.changed(trainer) == (0, start.changed(trainer)[1])  # nothing the optimizer updates changed
    start.put_back(trainer)
    for name, buffer in model[1].named_buffers():
        assert torch.equal(buffer, statistics[name]), name
    for tracker in (progress.total, progress.current):
        assert (tracker.ready, tracker.started, tracker.processed, tracker.completed) == (1, 1, 1, 1)

    start.record(trainer, model)
    batch(update=True)
    changed, total = start.changed(trainer)
    assert 0 < changed <= total == 6 * 4 + 1  # 6 weights, their step, exp_avg, exp_avg_sq; the group's step entry

    start.record(trainer, model)
    with torch.no_grad():  # an update that stopped after its first tensor (the single-tensor loop's order)
        optimizer.state[model[0].weight]["step"] += 1
    assert start.changed(trainer)[0] == 1


def test_a_checkpoint_folder_is_replaced_whole_and_a_killed_replacement_is_undone(tmp_path, caplog):
    """DeepSpeed checkpoints are folders: the new one is written beside the old one and renamed into place; a kill
    between the two renames leaves the old folder under ``.<name>.old-<pid>``, which the next fit puts back; a folder
    still being written (``.<name>.tmp-<pid>``) is removed."""
    from rsam.lit.checkpointing import OLD_MARK, remove_orphans, replace_folder

    def folder(path: Path, text: str) -> Path:
        (path / "checkpoint").mkdir(parents=True)
        (path / "checkpoint" / "mp_rank_00_model_states.pt").write_text(text)
        return path

    last = folder(tmp_path / "last.ckpt", "old")
    replace_folder(folder(tmp_path / f".last.ckpt{TEMP_MARK}7", "new"), last)
    assert (last / "checkpoint" / "mp_rank_00_model_states.pt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]

    os.replace(last, tmp_path / f".last.ckpt{OLD_MARK}7")  # killed after the first rename
    folder(tmp_path / f".last.ckpt{TEMP_MARK}7", "half")  # and the new folder was never renamed
    with caplog.at_level(logging.WARNING, logger="rsam.lit.checkpointing"):
        removed = remove_orphans(tmp_path)
    assert removed == [tmp_path / f".last.ckpt{TEMP_MARK}7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert (last / "checkpoint" / "mp_rank_00_model_states.pt").read_text() == "new"
    assert f"restoring {last} from" in caplog.text

    folder(tmp_path / f".last.ckpt{OLD_MARK}8", "older")  # killed after the second rename: the old one just goes
    remove_orphans(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]

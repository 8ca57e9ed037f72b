"""Interrupting a 2-process CPU DDP fit (issue 13, case 7): SIGINT to rank 0 only, SIGUSR1 to every rank, and SIGTERM
to the whole process group in the middle of training (not at a pause: wherever the ranks are), each ends with every
rank stopped after the same step, the exit code 128 + the signal and ``last.ckpt`` at that step; resuming after each
(``--ckpt_path last``, then ``auto``) trains every step exactly once per rank and finishes. (Lightning's own SIGTERM
handler runs a broadcast inside the signal handler, which pairs with whatever collective another rank is in.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from helpers.lit_runs import tiny_setup
from helpers.resume_checks import hooked_fit
from helpers.shard_utils import subprocess_env

STEPS = 8


def _command(recipe: Path, run: Path, record: Path, pause_at: int, *extra: str) -> list[str]:
    overrides = ("trainer.devices=2", "trainer.strategy=ddp", f"trainer.max_steps={STEPS}")
    return hooked_fit(recipe, run, record, pause_at, *overrides, *extra)


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,  # its own process group: the launcher's ranks, not pytest
    )


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            stderr = proc.communicate()[1]
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}:\n{stderr[-4000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode, err


def _steps(record: Path, rank: int) -> list[int]:
    path = record / f"order-rank{rank}.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.is_file() else []


def _saved_step(last: Path) -> int:
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def _pids(record: Path) -> list[int]:
    return [int((record / f"pid-rank{rank}").read_text()) for rank in (0, 1)]


def test_sigint_sigusr1_and_group_sigterm_stop_every_rank_resumably(tmp_path):
    recipe, _ = tiny_setup(tmp_path)
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    records = [tmp_path / f"record{i}" for i in range(4)]
    paused = lambda record: all((record / f"paused-rank{rank}").is_file() for rank in (0, 1))  # noqa: E731

    # SIGINT to rank 0 only, while both ranks are paused after step 2
    proc = _start(_command(recipe, run, records[0], 2))
    _wait(lambda: paused(records[0]), proc, "the pause after step 2")
    os.kill(_pids(records[0])[0], signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 128 + signal.SIGINT, err[-4000:]
    assert "rank 0: received SIGINT" in err and "rank 1: received" not in err
    assert _saved_step(last) == 2

    # SIGUSR1 to every rank, paused after step 4 (outside Slurm it is a stop, like SIGTERM)
    proc = _start(_command(recipe, run, records[1], 4, "--ckpt_path", "last"))
    _wait(lambda: paused(records[1]), proc, "the pause after step 4")
    for pid in _pids(records[1]):
        os.kill(pid, signal.SIGUSR1)
    rc, err = _finish(proc)
    assert rc == 128 + signal.SIGUSR1, err[-4000:]
    assert "rank 0: received SIGUSR1" in err and "rank 1: received SIGUSR1" in err
    assert _saved_step(last) == 4

    # SIGTERM to the process group while it trains (no pause: the signal lands wherever the ranks are)
    proc = _start(_command(recipe, run, records[2], 0, "--ckpt_path", "last"))
    _wait(lambda: 5 in _steps(records[2], 0) and 5 in _steps(records[2], 1), proc, "step 5")
    os.killpg(proc.pid, signal.SIGTERM)
    rc, err = _finish(proc)
    stopped = _saved_step(last)
    assert rc == 128 + signal.SIGTERM or (rc == 0 and stopped == STEPS), err[-4000:]
    for rank in (0, 1):  # both ranks stopped after the same step, the one saved
        assert _steps(records[2], rank) == list(range(4, stopped)), rank

    proc = _start(_command(recipe, run, records[3], 0, "--ckpt_path", "auto"))
    rc, err = _finish(proc)
    assert rc == 0, err[-4000:]
    assert _saved_step(last) == STEPS
    for rank in (0, 1):  # every step trained exactly once on each rank, over the four processes
        assert sum((_steps(record, rank) for record in records), []) == list(range(STEPS)), rank
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]

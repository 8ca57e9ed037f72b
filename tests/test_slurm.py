"""The sbatch scripts on a two-node Slurm cluster on localhost (``scripts/slurm_local.sh``: two slurmd daemons, nodeA
and nodeB; CI starts one and exports RSAM_SLURM_CONF): a 2-task CPU DDP job finishes and writes a checkpoint; a job
that gets the requeue signal mid-run (``scancel --signal=USR1``) saves Lightning's requeue checkpoint, is requeued,
resumes from it and completes; ``fit_multinode.sbatch`` on both nodes (1 task per node, srun + Lightning's
SLURMEnvironment) gets its ranks and MASTER_ADDR/PORT from Slurm, is requeued mid-run and ends bit-identical to an
uninterrupted 2-process run (issue 13, case 14); ``predict.sbatch`` splits GeoTIFF tiles across 2 tasks and
equals a single-process run (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.lit_runs import tiny_setup
from helpers.resume_checks import assert_same_tensors, load_state, read_order
from helpers.shard_utils import HELPERS, REPO, subprocess_env

SLURM_CONF = os.environ.get("RSAM_SLURM_CONF")
pytestmark = pytest.mark.skipif(
    not SLURM_CONF or not Path(SLURM_CONF).is_file() or shutil.which("sbatch") is None,
    reason="no local Slurm cluster: start one with `scripts/slurm_local.sh start` (root, Debian slurm-wlm) and "
    "export RSAM_SLURM_CONF=<its slurm.conf> (.ci/run does both)",
)

CPU_JOB = ["--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=00:10:00"]


def _env() -> dict[str, str]:
    """The jobs' environment: no MASTER_ADDR/PORT of the test's own (the scripts and Lightning derive them)."""
    env = {k: v for k, v in subprocess_env().items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    return {**env, "SLURM_CONF": SLURM_CONF}


def _slurm(*command: str, timeout: int = 30) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout.strip()


SUBMITTED: list[str] = []


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs():
    """A failing test must not leave its job running on the cluster."""
    yield
    while SUBMITTED:
        subprocess.run(["scancel", SUBMITTED.pop()], env=_env(), timeout=30, capture_output=True)


def _submit(
    log_dir: Path,
    *args: str,
    env: dict | None = None,
    script: str = "slurm/fit_1node.sbatch",
    layout: list[str] = CPU_JOB,
) -> str:
    result = subprocess.run(
        ["sbatch", "--parsable", *layout, f"--output={log_dir}/%x-%j.out", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**_env(), **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip().split(";")[0]
    SUBMITTED.append(job)
    return job


def _state(job: str) -> str:
    """The job's state from squeue ('' once it has left the queue)."""
    return _slurm("squeue", "-h", "-j", job, "-o", "%T")


def _job_field(job: str, field: str) -> str:
    for item in _slurm("scontrol", "show", "job", job).split():
        if item.startswith(f"{field}="):
            return item.split("=", 1)[1]
    raise AssertionError(f"no {field} for job {job}")


def _wait_gone(job: str, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while _state(job):
        if time.time() > deadline:
            subprocess.run(["scancel", job], env=_env(), timeout=30)
            pytest.fail(f"job {job} still {_state(job)} after {timeout} s; log:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(log: Path) -> str:
    return log.read_text()[-4000:] if log.is_file() else "(no log)"


def _summary(log: Path) -> dict:
    return json.loads([line for line in log.read_text().splitlines() if line.startswith('{"command"')][-1])


@pytest.fixture
def tiny(tmp_path):
    recipe, _ = tiny_setup(tmp_path)
    return recipe, tmp_path / "run", tmp_path / "logs"


def test_two_task_job_finishes_and_writes_a_checkpoint(tiny):
    recipe, run, logs = tiny
    logs.mkdir()
    started = time.time()
    job = _submit(logs, str(recipe), "--no-wandb", "trainer.strategy=ddp", f"trainer.default_root_dir={run}")
    _wait_gone(job, 300, logs / f"rsam-fit-{job}.out")
    log = (logs / f"rsam-fit-{job}.out").read_text()
    assert _job_field(job, "JobState") == "COMPLETED", log[-4000:]
    assert f"job {job} restart 0 nodes 1 tasks/node 2" in log
    assert "no checkpoint in" in log  # --ckpt_path auto on a first start: a fresh run, not an error
    assert _summary(logs / f"rsam-fit-{job}.out")["step"] == 4
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4
    print(f"\n[slurm] 2-task job {job}: {time.time() - started:.1f} s from sbatch to completion")


def test_requeue_signal_mid_run_resumes_and_completes(tiny, tmp_path):
    recipe, run, logs = tiny
    logs.mkdir()
    record, steps, pause_at = tmp_path / "record", 8, 3
    wrapper = _wrapper(tmp_path, record, pause_at)
    started = time.time()
    job = _submit(
        logs,
        str(recipe),
        "--no-wandb",
        "trainer.strategy=ddp",
        f"trainer.max_steps={steps}",
        f"trainer.default_root_dir={run}",
        env={"RSAM": str(wrapper)},
    )
    log = logs / f"rsam-fit-{job}.out"
    _requeue_mid_run(job, record, log, pause_at)
    text = log.read_text()
    assert _job_field(job, "JobState") == "COMPLETED", text[-4000:]
    assert int(_job_field(job, "Restarts")) == 1
    assert "Handling auto-requeue signal" in text and f"job {job} restart 1" in text
    hpc = run / "hpc_ckpt_1.ckpt"
    assert hpc.is_file() and torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == pause_at
    assert "--ckpt_path auto: resuming from" in text
    assert _summary(log)["step"] == steps
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == steps
    # steps 0-2 before the signal, then the restarted job trained only the remaining steps 3-7, each once
    trained = [json.loads(line)["step"] for line in (record / "order-rank0.jsonl").read_text().splitlines()]
    assert trained == list(range(steps))
    print(f"\n[slurm] requeue: {time.time() - started:.1f} s from sbatch to completion")


def _requeue_mid_run(job: str, record: Path, log: Path, pause_at: int) -> None:
    """Wait for every rank's pause after ``pause_at``, send the requeue signal, let the requeued job start at once
    and wait for it to leave the queue."""
    started = time.time()
    deadline = time.time() + 240
    while not all((record / f"paused-rank{rank}").is_file() for rank in (0, 1)):
        assert _state(job) in ("PENDING", "RUNNING", "CONFIGURING"), _tail(log)
        assert time.time() < deadline, f"the job never reached step {pause_at}:\n{_tail(log)}"
        time.sleep(0.3)
    _slurm("scancel", "--signal=USR1", job)
    signalled = time.time()

    # Lightning saves hpc_ckpt_1.ckpt and runs `scontrol requeue`; Slurm then holds the job (BeginTime) before its
    # restart: let it start now instead of waiting out the hold
    deadline = time.time() + 120
    while int(_job_field(job, "Restarts")) < 1:
        assert time.time() < deadline, f"the job was not requeued:\n{_tail(log)}"
        time.sleep(0.3)
    requeued = time.time()
    while (state := _state(job)) not in ("RUNNING", "") and time.time() < requeued + 200:
        if state == "PENDING":  # reason BeginTime: Slurm's hold of a requeued job (about 2 min without this)
            subprocess.run(
                ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=_env(), timeout=30, capture_output=True
            )
        time.sleep(0.5)
    restarted = time.time()
    _wait_gone(job, 300, log)
    print(
        f"\n[slurm] job {job}: signal {signalled - started:.1f} s after the start, requeued {requeued - signalled:.1f} "
        f"s later, running again after {restarted - requeued:.1f} s, completed {time.time() - restarted:.1f} s later"
    )


def _wrapper(tmp_path: Path, record: Path, pause_at: int) -> Path:
    """`rsam` that pauses after step ``pause_at`` (first run of the job only) so that the signal lands mid-run."""
    wrapper = tmp_path / "rsam-paused"
    wrapper.write_text(f'#!/bin/sh\nexec {REPO}/.venv/bin/python {HELPERS}/fit_hooks.py {record} {pause_at} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_two_node_job_ranks_requeue_and_exact_resume(tiny, tmp_path):
    recipe, run, logs = tiny
    logs.mkdir()
    steps, pause_at = 8, 3
    exact = [f"trainer.max_steps={steps}", "trainer.deterministic=true", "model.swin.drop_path_rate=0.2"]
    fit = ["--no-wandb", "trainer.strategy=ddp", *exact]

    # the reference: the same fit uninterrupted, 2 processes on one machine (Lightning's own launcher)
    reference, reference_record = tmp_path / "reference", tmp_path / "reference-record"
    command = [str(REPO / ".venv/bin/python"), str(HELPERS / "fit_hooks.py"), str(reference_record), "0", "fit"]
    result = subprocess.run(
        [*command, "--config", str(recipe), *fit, "trainer.devices=2", f"trainer.default_root_dir={reference}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-4000:]

    record = tmp_path / "record"
    started = time.time()
    job = _submit(
        logs,
        str(recipe),
        *fit,
        f"trainer.default_root_dir={run}",
        env={"RSAM": str(_wrapper(tmp_path, record, pause_at))},
        script="slurm/fit_multinode.sbatch",
        layout=["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=00:10:00"],
    )
    log = logs / f"rsam-fit-mn-{job}.out"
    _requeue_mid_run(job, record, log, pause_at)
    text = log.read_text()
    assert _job_field(job, "JobState") == "COMPLETED", text[-4000:]
    assert f"job {job} restart 0 nodes 2 tasks/node 1" in text and f"job {job} restart 1 nodes 2" in text

    layouts = [json.loads((record / f"env-rank{rank}.json").read_text()) for rank in (0, 1)]  # the restarted job's
    assert [(x["global_rank"], x["node_rank"], x["local_rank"], x["world_size"]) for x in layouts] == [
        (0, 0, 0, 2),
        (1, 1, 0, 2),
    ]
    assert [x["SLURMD_NODENAME"] for x in layouts] == ["nodeA", "nodeB"]
    assert {x["cluster"] for x in layouts} == {"SLURMEnvironment"} and layouts[0]["SLURM_RESTART_COUNT"] == "1"
    assert {x["MASTER_ADDR"] for x in layouts} == {"127.0.0.1"}  # nodeA's NodeAddr, from the sbatch script
    assert {x["MASTER_PORT"] for x in layouts} == {str(15000 + int(job[-4:]))}  # Lightning's, from the job id

    hpc = run / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == pause_at
    for rank in (0, 1):  # the data order over the two runs of the job = the uninterrupted run's
        assert read_order(record, rank) == read_order(reference_record, rank), rank
    expected = load_state(reference / "checkpoints" / "last.ckpt", tmp_path)
    actual = load_state(run / "checkpoints" / "last.ckpt", tmp_path)
    assert actual["global_step"] == expected["global_step"] == steps
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(expected[key], actual[key], key)  # bit-identical after the requeue
    print(f"\n[slurm] two-node job {job}: {time.time() - started:.1f} s from sbatch to completion, requeue included")


def test_predict_sbatch_splits_tiles_across_tasks_and_equals_one_process(tmp_path):
    """``slurm/predict.sbatch`` (issue 15): 2 tasks under srun + Lightning's SLURM environment write every tile once
    between them, and the assembled GeoTIFF equals a single-process ``rsam segment`` of the same scene to one uint8
    level (the DDP and single-process paths batch tiles differently)."""
    import numpy as np
    import rasterio
    from helpers.benchmark_loop import save_tiny_model
    from helpers.geo_data import write_raster

    from rsam.geo.tiling import TileGrid

    model = save_tiny_model(tmp_path / "model")
    data = np.random.default_rng(1).integers(1, 255, (3, 150, 140)).astype(np.uint8)
    scene = write_raster(tmp_path / "scene.tif", data)
    args = ["--model", str(model), "--prompt", "red roofs", "--tile", "64", "--overlap", "16"]
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "slurm" / "scene.tif"
    job = _submit(
        logs, *args, "-o", str(out), str(scene), script="slurm/predict.sbatch", env={"RSAM_ACCELERATOR": "cpu"}
    )
    log = logs / f"rsam-predict-{job}.out"
    _wait_gone(job, 300, log)
    assert _job_field(job, "JobState") == "COMPLETED", _tail(log)
    summary = json.loads([line for line in log.read_text().splitlines() if line.startswith('{"tiles_predicted"')][-1])
    expected = len(list(TileGrid(140, 150, 64, 16).tiles()))
    assert summary["world_size"] == 2 and summary["tiles_predicted"] == expected
    assert "rank 0 wrote" in log.read_text() and "rank 1 wrote" in log.read_text()
    single = tmp_path / "single.tif"
    result = subprocess.run(
        [sys.executable, "-m", "rsam.cli.main", "segment", *args, "-o", str(single), str(scene)],
        capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with rasterio.open(out) as a, rasterio.open(single) as b, rasterio.open(scene) as src:
        assert a.crs == src.crs and a.transform == src.transform
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} uint8 levels"

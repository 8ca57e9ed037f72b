"""The Lightning benchmark loop (rsam test --benchmark): batched prompts equal the one-prompt loop, rank shares,
metrics equal the model-free runner fed one prompt at a time, DOTA tiling, result files, checkpoints, bad input."""

import argparse
import json
import shutil
import time

import numpy as np
import pytest
import torch
from helpers.benchmark_loop import (
    DIOR_BOXES,
    TINY_CONFIG,
    save_tiny_model,
    tiny_model,
    write_dior,
    write_dior_xml,
    write_dota,
    write_dota_labels,
    write_isaid_seg,
    write_refsegrs,
)

from rsam.checkpoint.official import CheckpointError
from rsam.cli._benchmark_args import add_benchmark_arguments, run_from_args
from rsam.evaluation import evaluators as ev
from rsam.evaluation import get_benchmark, run_registered
from rsam.evaluation.dota_submission import DOTA_FILE_NAMES
from rsam.evaluation.model_predict import model_predict_fn
from rsam.evaluation.prediction_files import score_files
from rsam.evaluation.samples import Sample
from rsam.evaluation.sharding import RankShare
from rsam.lit.benchmark import run_benchmark_test
from rsam.predict import Predictor
from rsam.preprocess import to_rgb_uint8
from rsam.tasks import class_prompts, detect, detect_tiled, resize_nearest
from rsam.tasks.prompts import DIOR_CLASSES, DOTA_V2_CLASSES

DOTA_FILE_CLASSES = [DOTA_FILE_NAMES.get(n, n) for n in DOTA_V2_CLASSES]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine the tiny model runs ~10x faster than with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def one_prompt_fn():
    """The second path: one prompt per forward (Predictor(chunk_size=1)), maps stacked."""
    single = model_predict_fn(Predictor(tiny_model(), chunk_size=1))
    return lambda image, prompts: np.concatenate([single(image, [p]) for p in prompts])


def top_boxes(found: dict, count: int = 2) -> list:
    """The best-scoring box of the first ``count`` classes that have one."""
    return [(name, boxes.coords[int(np.argmax(boxes.scores))]) for name, boxes in found.items() if len(boxes)][:count]


def write_dior_found(root, predict):
    """DIOR data whose ground truth adds the one-prompt path's best boxes to fixed ones (so AP50 is neither 0 nor 1)."""
    write_dior(root, DIOR_BOXES)
    for path, fixed in zip(sorted((root / "JPEGImages-test").glob("*.jpg")), DIOR_BOXES):
        image = to_rgb_uint8(path)
        found = detect(resize_nearest(predict(image, class_prompts(DIOR_CLASSES)), image.shape[:2]), DIOR_CLASSES)
        write_dior_xml(root, path.stem, fixed + [(n, tuple(int(round(v)) for v in box)) for n, box in top_boxes(found)])
    return root


def run(benchmark, data, ckpt, out, **options):
    options = {"use_wandb": False, "chunk_size": 4, "progress_bar": False, "accelerator": "cpu", **options}
    return run_benchmark_test(benchmark, data, ckpt, out, **options)


def assert_same_metrics(ours: dict, reference: dict):
    for key, value in reference.items():
        if key in ("seconds", "benchmark"):
            continue
        if isinstance(value, dict):
            assert ours[key].keys() == value.keys(), key
            for name, v in value.items():
                assert ours[key][name] == (None if v is None else pytest.approx(v, abs=1e-9)), (key, name)
        else:
            assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_batched_prompts_equal_one_prompt_loop(one_prompt_fn):
    image = np.random.default_rng(0).integers(0, 256, (48, 70, 3), dtype=np.uint8)
    prompts = ["ship in the image", "the road on the left", "vehicle in the image", "trees", "a pond"]
    batched = model_predict_fn(Predictor(tiny_model(), chunk_size=2))(image, prompts)
    assert batched.shape == (5, 64, 64) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_prompt_fn(image, prompts), atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 0.05  # the text reaches the output
    assert 0.05 < (batched > 0.5).mean() < 0.6
    at_image = model_predict_fn(Predictor(tiny_model(), chunk_size=3), at_model_size=False)(image, prompts)
    assert at_image.shape == (5, 48, 70)


def test_rank_shares_are_disjoint_padded_and_match_the_runner(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    samples = [Sample(str(k), path, k) for k in range(7)]
    for world, limit in ((1, None), (2, None), (3, None), (2, 4)):
        shares = [list(RankShare(samples, rank, world, limit)) for rank in range(world)]
        assert len({len(share) for share in shares}) == 1  # equal step counts on every rank
        keys = [[item[0].key for item in share if item is not None] for share in shares]
        flat = [k for share in keys for k in share]
        assert sorted(flat, key=int) == [str(k) for k in range(limit or 7)] and len(set(flat)) == len(flat)
        for rank in range(world):  # the same split as run_benchmark(shard=(rank, world))
            assert keys[rank] == [s.key for i, s in enumerate(samples[:limit]) if i % world == rank]
    loader = torch.utils.data.DataLoader(RankShare(samples, 1, 2), batch_size=1, collate_fn=list, num_workers=2)
    assert sorted(item[0].key for batch in loader for item in batch if item is not None) == ["1", "3", "5"]
    with pytest.raises(ValueError, match="rank"):
        RankShare(samples, 2, 2)


@pytest.mark.parametrize(
    "benchmark, write",
    [
        ("refsegrs", write_refsegrs),
        ("isaid-seg", write_isaid_seg),
        ("dior-det", write_dior_found),
        ("dior-mlc", write_dior_found),
    ],
)
def test_loop_equals_one_prompt_runner(benchmark, write, tmp_path, model_dir, one_prompt_fn):
    data = write(tmp_path / "data", one_prompt_fn) if write is write_dior_found else write(tmp_path / "data")
    out = tmp_path / "out"
    payload = run(benchmark, data, model_dir, out)
    reference = run_registered(get_benchmark(benchmark), data, one_prompt_fn)
    assert_same_metrics(payload["metrics"], reference)
    # result files: JSON = the returned payload, Markdown headline table with the benchmark's metrics
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(payload["metrics"]))
    assert saved["benchmark"] == benchmark and saved["world_size"] == 1 and saved["limit"] is None
    markdown = (out / "results.md").read_text()
    spec = get_benchmark(benchmark)
    assert f"| {benchmark} |" in markdown and all(name in markdown for name in spec.metrics)
    if benchmark == "refsegrs":
        assert payload["metrics"]["samples"] == 5 and 0 < payload["metrics"]["oIoU"] < 1
        assert payload["metrics"]["mIoU"] > 0
    if benchmark == "isaid-seg":
        assert payload["metrics"]["mIoU"] > 0 and "## Per class" in markdown
    if benchmark == "dior-mlc":
        assert payload["metrics"]["samples"] == 3
    if benchmark == "dior-det":
        assert payload["metrics"]["images"] == 3 and 0 < payload["metrics"]["AP50"] < 1


def test_dota_large_images_are_tiled(tmp_path, model_dir, one_prompt_fn, monkeypatch):
    data = write_dota(tmp_path / "dota")
    for path in sorted((data / "images").glob("*.png")):  # ground truth: fixed boxes + the one-prompt path's best
        found = detect_tiled(
            to_rgb_uint8(path), DOTA_V2_CLASSES, class_prompts(DOTA_V2_CLASSES), one_prompt_fn, box_type="obb"
        )
        fixed = [(DOTA_V2_CLASSES[1], (100, 100, 300, 100, 300, 250, 100, 250))]
        write_dota_labels(data, path.stem, fixed + top_boxes(found))
    calls = []
    real_detect_tiled = ev.detect_tiled

    def spy(image, class_names, prompts, predict, **options):
        def counted(patch, patch_prompts):
            calls.append((image.shape[:2], patch.shape[:2], len(patch_prompts)))
            return predict(patch, patch_prompts)

        return real_detect_tiled(image, class_names, prompts, counted, **options)

    monkeypatch.setattr(ev, "detect_tiled", spy)
    payload = run("dota-v2-obb", data, model_dir, tmp_path / "out", chunk_size=8)
    # 800 x 1000 images: columns at x = 0 and 104, one row -> 2 patches of 896 x 896 per image, 18 prompts each
    assert calls == [((800, 1000), (896, 896), 18)] * 4
    calls.clear()
    reference = run_registered(get_benchmark("dota-v2-obb"), data, one_prompt_fn)
    assert len(calls) == 4
    assert_same_metrics(payload["metrics"], reference)
    assert 0 < payload["metrics"]["AP50"] < 1
    # the DOTA submission files, merged to the original images, score back to the same AP through rsam score
    folder = tmp_path / "out" / "submission"
    assert payload["files"]["submission"] == str(folder)
    assert {p.name for p in folder.glob("Task1_*.txt")} == {f"Task1_{n}.txt" for n in DOTA_FILE_CLASSES}
    assert {p.name for p in folder.glob("Task2_*.txt")} == {f"Task2_{n}.txt" for n in DOTA_FILE_CLASSES}
    lines = [line.split() for p in folder.glob("Task1_*.txt") for line in p.read_text().splitlines()]
    assert lines and {fields[0] for fields in lines} <= {"P0000", "P0001"} and all(len(f) == 10 for f in lines)
    rescored = score_files("obb", folder, data / "labelTxt", classes=list(DOTA_V2_CLASSES))
    assert rescored["AP50"] == pytest.approx(payload["metrics"]["AP50"], abs=1e-12)


def test_dota_without_labels_writes_the_submission_only(tmp_path, model_dir):
    """DOTA test-dev has no public labels: the same images without labelTxt give the same submission files and no
    metric."""
    data = write_dota(tmp_path / "dota", (120, 160), 2, [("ship", (10, 10, 60, 12, 58, 40, 8, 38))])
    labelled = run("dota-v2-det", data, model_dir, tmp_path / "labelled")
    shutil.rmtree(data / "labelTxt")
    unlabelled = run("dota-v2-det", data, model_dir, tmp_path / "unlabelled")
    assert unlabelled["metrics"] == {"images": 2, "labelled": False} and "AP50" in labelled["metrics"]
    files = {
        run_name: {p.name: p.read_text() for p in (tmp_path / run_name / "submission").glob("*.txt")}
        for run_name in ("labelled", "unlabelled")
    }
    assert len(files["labelled"]) == 36 and files["labelled"] == files["unlabelled"]
    assert any(files["labelled"].values())


def _lightning_checkpoint(path, state=None):
    import lightning.pytorch as pl

    from rsam.lit.module import RemoteSAMModule

    module = RemoteSAMModule(TINY_CONFIG.to_dict())
    module.model.load_state_dict(tiny_model().state_dict() if state is None else state)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def _finished_history(path, timeout: float = 60.0) -> list:
    """The history rows of an offline run file once wandb's service has written its exit record (the file is
    written asynchronously, after ``finish()`` returns)."""
    from helpers.wandb_records import history, raw_records
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        kinds = []
        for payload in raw_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            kinds.append(record.WhichOneof("record_type"))
        if "exit" in kinds or time.monotonic() > deadline:
            return history(path)
        time.sleep(0.2)


def test_lightning_checkpoint_cli_and_wandb(tmp_path, model_dir, capsys):
    data = write_refsegrs(tmp_path / "data")
    ckpt = _lightning_checkpoint(tmp_path / "fit.ckpt")
    folder_run = run("refsegrs", data, model_dir, tmp_path / "folder", limit=4)
    args = add_benchmark_arguments(argparse.ArgumentParser()).parse_args(
        [
            "--benchmark",
            "refsegrs",
            "--data",
            str(data),
            "--ckpt",
            str(ckpt),
            "--out",
            str(tmp_path / "ckpt"),
            "--limit",
            "4",
            "--accelerator",
            "cpu",
            "--num-workers",
            "0",
            "--chunk-size",
            "3",
        ]
    )
    assert run_from_args(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["benchmark"] == "refsegrs" and summary["metrics"]["samples"] == 4
    saved = json.loads((tmp_path / "ckpt" / "results.json").read_text())
    assert saved["limit"] == 4 and saved["ckpt"] == str(ckpt)
    assert_same_metrics(saved["metrics"], folder_run["metrics"])
    runs = list((tmp_path / "ckpt" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    rows = _finished_history(runs[0])
    assert any(row.get("test/oIoU") == pytest.approx(saved["metrics"]["oIoU"]) for row in rows)
    assert any(row.get("test/results/_type") == "table-file" for row in rows)
    table = json.loads(next(runs[0].parent.glob("files/media/table/test/results_*.table.json")).read_text())
    assert table["columns"][:2] == ["benchmark", "oIoU"] and table["data"][0][0] == "refsegrs"


def test_bad_input_gets_one_clear_error(tmp_path, model_dir):
    data = write_refsegrs(tmp_path / "data")
    with pytest.raises(ValueError, match="unknown benchmark 'nope'; known: .*rrsisd"):
        run("nope", data, model_dir, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        run("refsegrs", tmp_path / "missing", model_dir, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        run("refsegrs", data, tmp_path / "missing.ckpt", tmp_path / "out")
    state = tiny_model().state_dict()
    state["classifier.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys: classifier.extra"):
        run("refsegrs", data, _lightning_checkpoint_raw(tmp_path / "extra.ckpt", state), tmp_path / "out")
    with pytest.raises(CheckpointError, match="outside 'model.'"):
        run("refsegrs", data, _raw_ckpt(tmp_path / "foreign.ckpt", {"net.w": torch.zeros(1)}), tmp_path / "out")
    torch.save({"model": {"something.else": torch.zeros(2)}}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="missing"):
        run("refsegrs", data, tmp_path / "wrong.pth", tmp_path / "out")
    args = add_benchmark_arguments(argparse.ArgumentParser()).parse_args(["--benchmark", "refsegrs"])
    with pytest.raises(ValueError, match="needs --data, --model"):
        run_from_args(args)


def test_arguments_fit_the_rsam_test_parser():
    from rsam.cli._lightning import add_recipe_arguments

    parser = add_benchmark_arguments(add_recipe_arguments(argparse.ArgumentParser(), "checkpoint"))
    args = parser.parse_args(
        ["--benchmark", "dior-det", "--data", "d", "--ckpt", "c.ckpt", "--no-wandb", "--devices", "0,1"]
    )
    assert (args.benchmark, args.model, args.ckpt_path, args.wandb, args.devices) == (
        "dior-det",
        "c.ckpt",
        None,
        False,
        [0, 1],
    )


def _raw_ckpt(path, state_dict):
    torch.save({"state_dict": state_dict, "hyper_parameters": {"model_config": TINY_CONFIG.to_dict()}}, path)
    return path


def _lightning_checkpoint_raw(path, network_state):
    return _raw_ckpt(path, {f"model.{k}": v for k, v in network_state.items()})


def test_rsam_test_command_runs_a_benchmark(tmp_path, model_dir):
    """`rsam test --benchmark NAME --data PATH --ckpt CKPT` is wired to the benchmark loop (real CLI process)."""
    import json
    import subprocess
    import sys

    data = write_refsegrs(tmp_path / "refsegrs")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsam.cli.main",
            "test",
            "--benchmark",
            "refsegrs",
            "--data",
            str(data),
            "--ckpt",
            str(model_dir),
            "--out",
            str(out),
            "--no-wandb",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert (out / "results.md").is_file()
    assert "oIoU" in json.dumps(results) and "oIoU" in json.dumps(summary)

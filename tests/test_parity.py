"""Numerical parity with the official code on the shared golden set, located per intermediate."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from rsam.checkpoint.golden import load_golden_config, load_golden_weights
from rsam.models import build_model
from rsam.parity import LOGIT_TOLERANCE, _tolerance, case_names, run_case
from rsam.predict import postprocess


@pytest.fixture(scope="module")
def golden(reference_dir):
    return dict(np.load(reference_dir / "tiny_golden.npz"))


@pytest.fixture(scope="module")
def model(reference_dir):
    net = build_model(load_golden_config(reference_dir / "tiny_config.json"))
    net.load_state_dict(load_golden_weights(reference_dir / "tiny_weights.safetensors"), strict=True)
    return net.eval()


def test_golden_weights_decode_exactly(reference_dir):
    from safetensors import safe_open

    weights = load_golden_weights(reference_dir / "tiny_weights.safetensors")
    with safe_open(str(reference_dir / "tiny_weights.safetensors"), "pt") as handle:
        import json

        exponents = json.loads(handle.metadata()["exponents"])
        key = "backbone.cim.up_channel.weight"
        codes = handle.get_tensor(key)
    # value = code * 2^-e, exact in float32
    assert torch.equal(weights[key], codes.double().mul(2.0 ** -exponents[key]).float())
    assert weights["backbone.layers.0.blocks.0.attn.relative_position_index"].dtype == torch.int64


@pytest.mark.parametrize("case", ["case0", "case1", "case2"])
def test_case_matches_official(model, golden, case):
    result = run_case(model, golden, case)
    for name, value in result.max_abs.items():
        assert value <= LOGIT_TOLERANCE, f"{case} {name}: {value}"
    # every stored intermediate is compared, so a mismatch is located
    expected = {k[len(case) + 1 :] for k in golden if k.startswith(case + "_")} - {
        "image_u8",
        "input_ids",
        "attention_mask",
        "logits",
        "logits_sub4",
        "decoder_logits_fp64",
        "post_mask_300x500",
        "post_prob_300x500",
    }
    assert set(result.intermediates) == expected
    assert {n for n, v in result.intermediates.items() if v > _tolerance(n)} == set()
    assert result.intermediates["text_last_hidden"] <= 2e-5


def test_official_post_processing(golden):
    prob, mask = postprocess(torch.from_numpy(golden["case0_logits"]), (300, 500))
    assert np.array_equal(mask[0].numpy(), golden["case0_post_mask_300x500"])
    np.testing.assert_array_equal(prob[0].numpy(), golden["case0_post_prob_300x500"])


def _subset(golden, case, path, perturb=0.0):
    arrays = {k: v for k, v in golden.items() if k.startswith(case + "_")}
    arrays[f"{case}_logits_sub4"] = arrays[f"{case}_logits_sub4"] + np.float32(perturb)
    np.savez(path, **arrays)
    return path


def test_parity_command_exit_codes(reference_dir, golden, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rsam.cli.main",
        "parity",
        "--config",
        str(reference_dir / "tiny_config.json"),
        "--weights",
        str(reference_dir / "tiny_weights.safetensors"),
    ]
    good = subprocess.run(
        cmd + ["--golden", str(_subset(golden, "case2", tmp_path / "g.npz"))], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    line = __import__("json").loads(good.stdout.strip().splitlines()[-1])
    assert line["case"] == "case2" and line["pass"] and line["max_abs_logits_sub4"] <= 1e-4
    bad = subprocess.run(
        cmd + ["--golden", str(_subset(golden, "case2", tmp_path / "b.npz", 1e-3))], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert __import__("json").loads(bad.stdout.strip())["pass"] is False


def test_case_discovery_is_numeric():
    keys = {f"case{i}_image_u8": 0 for i in (0, 2, 10, 1)}
    assert case_names(keys) == ["case0", "case1", "case2", "case10"]


def _extra_golden_sets():
    """Golden sets beyond the shared one, e.g. made from the official code with other depths/heads/window/sizes:
    RSAM_EXTRA_GOLDEN=dir1:dir2, each holding <name>_config.json, <name>_weights.safetensors, <name>_golden.npz."""
    import os
    from pathlib import Path

    sets = []
    for folder in filter(None, os.environ.get("RSAM_EXTRA_GOLDEN", "").split(":")):
        for config in sorted(Path(folder).glob("*_config.json")):
            stem = config.name[: -len("_config.json")]
            sets.append(
                (config, config.with_name(f"{stem}_weights.safetensors"), config.with_name(f"{stem}_golden.npz"))
            )
    return sets


@pytest.mark.skipif(not _extra_golden_sets(), reason="no extra golden sets (set RSAM_EXTRA_GOLDEN)")
@pytest.mark.parametrize("config, weights, golden_npz", _extra_golden_sets() or [(None, None, None)])
def test_extra_golden_sets(config, weights, golden_npz):
    from rsam.parity import run_parity

    results = list(run_parity(config, weights, golden_npz))
    assert results
    for result in results:
        assert result.passed, result.to_json()
        assert not result.failed_intermediates, result.to_json()

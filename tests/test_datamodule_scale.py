"""Scale: a synthetic 270K-triplet dataset (small images) read by 2 processes x 2 workers (torchrun, gloo), from
the local folder and from an HTTP server (``python -m http.server`` on 127.0.0.1) through the shard cache.

Eval mode: every one of the 270,001 samples exactly once across ranks (uneven shards, one padding sample).
Train mode: the same number of samples on every rank. Over HTTP: every shard downloaded exactly once by the 4
readers sharing the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.servers import http_server
from helpers.shard_utils import HELPERS, subprocess_env

from rsam.data.synthetic import write_synthetic_dataset

HELPER = HELPERS / "ddp_shards_check.py"
SHARD_SIZES = [1000 + (i % 7) - 3 for i in range(270)] + [7]  # uneven shards, 270,001 samples
TRAIN_PER_RANK = 20_000


@pytest.mark.slow
def test_270k_eval_exactly_once_and_equal_train_counts(tmp_path):
    total = sum(SHARD_SIZES)
    assert total == 270_001
    data = tmp_path / "syn270k"
    write_synthetic_dataset(data, SHARD_SIZES, image_size=8, split="val")
    out = tmp_path / "out"
    env = subprocess_env()
    with http_server(data, tmp_path / "requests.log") as http:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            os.environ["MASTER_PORT"],
            str(HELPER),
            "plain",
            str(out),
            str(data),
            str(TRAIN_PER_RANK),
            http.url,
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert all(http.gets(f"val-{i:06d}.tar") == 1 for i in range(len(SHARD_SIZES)))  # once for 4 readers
    reports = [json.loads((out / f"plain-rank{r}.json").read_text()) for r in (0, 1)]
    for source in (0, 1):  # the local folder, then the same shards over HTTP
        ranks = [reports[0][source], reports[1][source]]
        keys = ranks[0]["valid_keys"] + ranks[1]["valid_keys"]
        assert len(keys) == total and len(set(keys)) == total
        assert set(keys) == {f"syn-{n:08d}" for n in range(total)}
        assert ranks[0]["padding"] + ranks[1]["padding"] == 1
        steps = [len(r["valid_keys"]) + r["padding"] for r in ranks]
        assert steps[0] == steps[1] == (total + 1) // 2
        assert [c["train"] for c in ranks[0]["all_counts"]] == [TRAIN_PER_RANK, TRAIN_PER_RANK]
        assert ranks[0]["train_head"] != ranks[1]["train_head"]
    assert reports[0][1]["valid_keys"] == reports[0][0]["valid_keys"]  # the same samples, in the same order

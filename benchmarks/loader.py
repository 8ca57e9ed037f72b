"""End-to-end loader throughput: read, decode, resize to 896², normalise, tokenize, collate (samples/s).

    .venv/bin/python benchmarks/loader.py [--demo DIR] [--workers 2] [--samples 240] [--json OUT]

Measures the training DataLoader of :class:`datamodules.remotesam_shards.RemoteSAMShardDataModule` on (a) the demo
shards (``rsam data demo``; skipped if absent) and (b) generated 896x896 JPEG shards. The first batch (worker
start-up, tokenizer build) is excluded. Target on the 2-core dev machine: >= 12 samples/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.remotesam_shards import RemoteSAMShardDataModule  # noqa: E402
from rsam.data.demo import default_demo_dir  # noqa: E402
from rsam.data.synthetic import write_synthetic_dataset  # noqa: E402

log = logging.getLogger("benchmarks.loader")


def measure(folder: Path, *, workers: int, samples: int, batch_size: int, image_size: int) -> dict:
    datamodule = RemoteSAMShardDataModule(
        str(folder), image_size=image_size, batch_size=batch_size, num_workers=workers, samples_per_rank=samples, seed=0
    )
    loader = datamodule.train_dataloader()
    start, count, first = time.perf_counter(), 0, None
    for batch in loader:
        if first is None:
            first = time.perf_counter()
            continue
        count += len(batch["valid"])
    end = time.perf_counter()
    return {
        "dataset": str(folder),
        "workers": workers,
        "batch_size": batch_size,
        "image_size": image_size,
        "samples_timed": count,
        "seconds": round(end - first, 2),
        "startup_s": round(first - start, 2),
        "samples_per_s": round(count / (end - first), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=str(default_demo_dir()), help="demo dataset folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=240, help="samples per run (first batch excluded)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=896)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = dict(workers=args.workers, samples=args.samples, batch_size=args.batch_size, image_size=args.image_size)
    results = []
    if (Path(args.demo) / "index.json").is_file():
        results.append({"name": "demo shards", **measure(Path(args.demo), **options)})
    else:
        log.warning("no demo dataset at %s (run `rsam data demo`): skipped", args.demo)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(tmp, {"train": [64] * 4}, image_size=896, image_format="jpg", patterns=16)
        results.append({"name": "896x896 JPEG shards", **measure(Path(tmp), **options)})
    for result in results:
        log.info(
            "%-20s %6.2f samples/s (%d samples in %.1f s, %d workers)",
            result["name"],
            result["samples_per_s"],
            result["samples_timed"],
            result["seconds"],
            result["workers"],
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

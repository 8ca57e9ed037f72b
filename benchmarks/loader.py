"""End-to-end loader throughput: fetch, decode, resize to 896², normalise, tokenize, collate (samples/s).

    .venv/bin/python benchmarks/loader.py [--workers 2] [--samples 160] [--json OUT]

Measures, in one run and on the same generated 896x896 JPEG shards (4 x 64 samples), the training DataLoader
(``ResampledShardSampler`` order, batch 2, ``--workers`` workers) of

- ``reference local``: the hand-written tar reader rsam had before it read shards with webdataset/wids
  (``rsam/data/reader.py`` at commit ``REFERENCE_COMMIT``, loaded from git history at run time), local files;
- ``indexed local``: :class:`rsam.data.reader.IndexedShards` (wids) on local files;
- ``indexed HTTP cold`` / ``warm``: the same over ``http://127.0.0.1`` (``python -m http.server``), first with an
  empty shard cache (every shard downloaded while the epoch runs), then with the cache filled;
- ``stream HTTP``: the webdataset pipeline of ``data.mode: stream`` over HTTP (no cache).

The first batch (worker start-up, tokenizer build) is excluded. The machine may be shared: every row records the
CPU time used by other processes during the measurement (``/proc/stat`` busy time minus this run's own CPU time,
the HTTP server's included), in cores, and the samples per CPU-second this run used (a figure that does not depend
on how loaded the machine was). Targets on the 2-core dev machine: every mode except cold HTTP >= 0.9 x the
reference, every mode >= 25 samples/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torch.utils.data import DataLoader  # noqa: E402

from datamodules.remotesam_shards import RemoteSAMShardDataModule, SampleDecoder, collate  # noqa: E402
from rsam.data.samplers import ResampledShardSampler  # noqa: E402
from rsam.data.shards import split_shards  # noqa: E402
from rsam.data.synthetic import write_synthetic_dataset  # noqa: E402

log = logging.getLogger("benchmarks.loader")

REFERENCE_COMMIT = "320beaf4f9e0765e801bae3cf7c788aab2522c5e"  # the last commit with the hand-written tar reader
CLOCK = os.sysconf("SC_CLK_TCK")


def load_reference_reader():
    """The pre-webdataset ``rsam.data.reader`` module, from git history (measured in the same run as the new one)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{REFERENCE_COMMIT}:rsam/data/reader.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "reference_reader.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("reference_reader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def busy_seconds() -> float:
    """CPU time spent by all processes since boot (every field of /proc/stat's cpu line but idle and iowait)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK


def own_seconds(server_pid: int | None) -> float:
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    if server_pid is not None:  # a live child is not in RUSAGE_CHILDREN until it is reaped
        stat = open(f"/proc/{server_pid}/stat").read().rsplit(")", 1)[1].split()
        used += (int(stat[11]) + int(stat[12])) / CLOCK
    return used


def run_loader(loader: DataLoader, server_pid: int | None) -> dict:
    start, count, first = time.perf_counter(), 0, None
    busy0 = own0 = None
    for batch in loader:
        if first is None:
            first = time.perf_counter()
            busy0, own0 = busy_seconds(), own_seconds(server_pid)
            continue
        count += len(batch["valid"])
    del loader  # workers joined, so their CPU time is in RUSAGE_CHILDREN
    end = time.perf_counter()
    busy, own = busy_seconds() - busy0, own_seconds(server_pid) - own0
    seconds = end - first
    return {
        "samples_timed": count,
        "seconds": round(seconds, 2),
        "startup_s": round(first - start, 2),
        "samples_per_s": round(count / seconds, 2),
        "own_cpu_cores": round(own / seconds, 2),
        "samples_per_own_cpu_s": round(count / own, 2) if own > 0 else None,
        "other_cpu_cores": round(max(0.0, busy - own) / seconds, 2),
    }


def reference_loader(reader, folder: Path, options: dict) -> DataLoader:
    shards = split_shards(folder, "train")
    dataset = reader.ShardSamples(shards, transform=SampleDecoder(options["image_size"]))
    sampler = ResampledShardSampler(dataset.sizes, options["samples"], seed=0, num_replicas=1, rank=0)
    return DataLoader(
        dataset, batch_size=options["batch_size"], sampler=sampler, num_workers=options["workers"], collate_fn=collate
    )


def new_loader(location: str, mode: str, cache_dir: Path, options: dict) -> DataLoader:
    datamodule = RemoteSAMShardDataModule(
        location,
        image_size=options["image_size"],
        batch_size=options["batch_size"],
        num_workers=options["workers"],
        samples_per_rank=options["samples"],
        seed=0,
        mode=mode,
        cache_dir=str(cache_dir),
        verify="size",
    )
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def start_http(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/index.json", timeout=2).close()
            return server, url
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the HTTP server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=160, help="samples per mode (first batch excluded)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=896)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = dict(workers=args.workers, samples=args.samples, batch_size=args.batch_size, image_size=args.image_size)
    reference = load_reference_reader()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        write_synthetic_dataset(folder, {"train": [64] * 4}, image_size=896, image_format="jpg", patterns=16)
        server, url = start_http(folder)
        try:
            runs = [
                ("reference local", lambda: reference_loader(reference, folder, options)),
                ("indexed local", lambda: new_loader(str(folder), "indexed", Path(tmp) / "c0", options)),
                ("indexed HTTP cold", lambda: new_loader(url, "indexed", Path(tmp) / "c1", options)),
                ("indexed HTTP warm", lambda: new_loader(url, "indexed", Path(tmp) / "c1", options)),
                ("stream HTTP", lambda: new_loader(url, "stream", Path(tmp) / "c2", options)),
            ]
            for name, make in runs:
                results.append({"name": name, **options, **run_loader(make(), server.pid)})
                log.info(
                    "%-18s %6.2f samples/s  (others used %.2f cores)",
                    name,
                    results[-1]["samples_per_s"],
                    results[-1]["other_cpu_cores"],
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    base = results[0]["samples_per_s"]
    for result in results:
        result["vs_reference"] = round(result["samples_per_s"] / base, 3)
    header = ("mode", "samples/s", "x ref", "own cores", "other cores", "samples/CPU-s")
    log.info("%-18s %10s %8s %10s %12s %14s", *header)
    for r in results:
        log.info(
            "%-18s %10.2f %8.2f %10.2f %12.2f %14.2f",
            r["name"],
            r["samples_per_s"],
            r["vs_reference"],
            r["own_cpu_cores"],
            r["other_cpu_cores"],
            r["samples_per_own_cpu_s"] or 0.0,
        )
    log.info("load average at the end: %s", open("/proc/loadavg").read().strip())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

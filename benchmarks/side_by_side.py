"""The official code and rsam side by side in one invocation: alternating processes, ratios as JSON.

Each job runs the official runner's ``bench.py`` (``$OFFICIAL_ROOT/venv``; see the runner's README) and
``benchmarks/rsam_bench.py`` in separate processes, one after the other (never two at once: a training step of the
official configuration peaks at 12+ GB), alternating which goes first from round to round. Every process reports
other processes' CPU use over its timed block (``other_procs_cores_avg``: above ~0.05 cores on a 2-core machine the
timing is contaminated); the JSON keeps them next to each ratio.

Jobs: ``forward`` (896², batch 1, no grad), ``semseg:K`` (K prompts on the official demo image), ``train:B``
(training steps at batch B; the first step allocates AdamW state, so steady-state steps are compared). rsam variants
per job (``--variants``): ``fp32``, ``bf16`` (autocast), ``ckpt`` (activation checkpointing, training only).

Allocators: rsam's processes run as rsam's commands do (``rsam.allocator``: jemalloc where installed, or what
``RSAM_MALLOC`` says); the official code runs on the system allocator (``official``), and with
``--official-malloc system jemalloc`` also on jemalloc (``official_jemalloc``, same ``MALLOC_CONF`` as rsam's), which
gives the like-for-like ratios (``ratios_vs_official_jemalloc``).

A CPU without bf16 instructions: ``--onednn-isa AVX512_CORE`` caps oneDNN (``ONEDNN_MAX_CPU_ISA``, oneDNN's own
switch) at AVX-512 without AVX512_BF16/AMX, a Skylake / Cascade Lake class CPU, for every process of both codes;
PyTorch dispatches bf16 to oneDNN there as on such a CPU, where oneDNN emulates bf16 with AVX-512 instructions.

    python benchmarks/side_by_side.py --official-root $OFFICIAL_ROOT --jobs forward semseg:1 semseg:10 train:1 train:2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from rsam.allocator import JEMALLOC_CONF, find_jemalloc  # noqa: E402

ALL_SECTIONS = ["matmul", "forward", "grad_forward", "flops", "semseg", "train"]


def run_json(command: list[str], timeout: float, env: dict | None = None) -> dict:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}", "stderr_tail": result.stderr[-2000:]}
    text = result.stdout
    report = json.loads(text[text.index("{") :])
    report["process_wall_s"] = round(time.perf_counter() - started, 1)
    return report


def mem_available_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def needed_gib(job: str, value: int, variant: str) -> float:
    """A conservative peak for one process (the official training step: ~12.3 GB at batch 1, + ~7 GB per image)."""
    if job != "train":
        return 5.0
    if variant == "ckpt":
        return 6.0 + 2.0 * value
    return 6.0 + 7.5 * value


def official_command(args, job: str, value: int) -> list[str]:
    python = str(Path(args.official_root) / "venv" / "bin" / "python")
    command = [python, str(Path(args.runner) / "bench.py"), "--warmup", "1"]
    if job == "forward":
        keep, extra = "forward", ["--n", str(args.n)]
    elif job == "semseg":
        keep, extra = "semseg", ["--k", str(value)]
    else:
        keep, extra = "train", ["--train-batch", str(value), "--train-steps", str(args.train_steps)]
    skip = [s for s in ALL_SECTIONS if s != keep]
    return command + extra + ["--skip", *skip]


def rsam_command(args, job: str, value: int, variant: str) -> list[str]:
    command = [sys.executable, str(HERE / "rsam_bench.py"), "--official-root", args.official_root]
    if job == "forward":
        command += ["--sections", "forward", "--n", str(args.n)]
    elif job == "semseg":
        command += ["--sections", "semseg", "--k", str(value)]
    else:
        command += ["--sections", "train", "--train-batch", str(value), "--train-steps", str(args.train_steps)]
    if variant == "bf16":
        command += ["--precision", "bf16"]
    if variant == "ckpt":
        command += ["--checkpointing"]
    return command


def figures(report: dict, job: str, allocator: str | None = None) -> dict:
    """(seconds, peak RSS MiB, other processes' cores, allocator) of one process's job section."""
    if "error" in report:
        return {"error": report["error"]}
    if job == "forward":
        section = report["forward_896_b1"]
        seconds = section["median_s"]
    elif job == "semseg":
        section = report["semseg"]
        seconds = section["total_s"]
    else:
        section = report["train_step"]
        steady = [step["step_s"] for step in section["per_step"][1:]] or [section["per_step"][0]["step_s"]]
        seconds = statistics.median(steady)
    out = {
        "seconds": seconds,
        "peak_rss_mb": section["peak_rss_mb"],
        "other_procs_cores_avg": section["cpu"]["other_procs_cores_avg"],
        "allocator": report.get("allocator", allocator),
    }
    if job == "semseg" and "chosen_chunk_size" in section:
        out["chunk_size"] = section["chosen_chunk_size"]
    if job == "train":  # where a steady-state step's time goes
        steady = section["per_step"][1:] or section["per_step"]
        out["phases_s"] = {
            phase: statistics.median(step[phase] for step in steady)
            for phase in ("forward_s", "loss_s", "backward_s", "optimizer_s")
        }
    return out


def _pairs(results: dict):
    """(entry, official run name, its figures, rsam run name, its figures) for every rsam run and official run."""
    for entry in results["jobs"]:
        for base in (name for name in entry["figures"] if name.startswith("official")):
            for name, found in entry["figures"].items():
                if not name.startswith("official"):
                    yield entry, base, entry["figures"][base], name, found


def ratios(found: dict, official: dict) -> dict:
    """rsam / official time and peak RSS of one pair of processes."""
    return {"time": found["seconds"] / official["seconds"], "peak_rss": found["peak_rss_mb"] / official["peak_rss_mb"]}


def markdown(results: dict) -> str:
    """The README's table from a side_by_side JSON: one row per (job, round, rsam variant)."""
    lines = [
        "| job | round | official (allocator) | official s | rsam variant (allocator) | rsam s | time ratio "
        "| official peak RSS MB | rsam peak RSS MB | RSS ratio | other cores (official / rsam) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, base, official, name, found in _pairs(results):
        if "error" in found or "error" in official:
            reason = found.get("error") or official.get("error")
            lines.append(f"| {entry['job']} | {entry['round']} | {base} | | {name} | | {reason} | | | | |")
            continue
        ratio = ratios(found, official)  # from the figures: an interrupted job's finished processes still count
        chunk = f" (chunk {found['chunk_size']})" if found.get("chunk_size") else ""
        lines.append(
            f"| {entry['job']} | {entry['round']} | {base} ({official.get('allocator', 'system')}) | "
            f"{official['seconds']:.1f} | "
            f"{name}{chunk} ({found.get('allocator', 'system')}) | "
            f"{found['seconds']:.1f} | **{ratio['time']:.2f}×** | "
            f"{official['peak_rss_mb']:.0f} | "
            f"{found['peak_rss_mb']:.0f} | **{ratio['peak_rss']:.2f}×** | "
            f"{official['other_procs_cores_avg']:.2f} / {found['other_procs_cores_avg']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", default=os.environ.get("OFFICIAL_ROOT", ""))
    parser.add_argument("--runner", default=str(HERE.parent.parent / "shared" / "official-runner"))
    parser.add_argument("--jobs", nargs="+", default=["forward", "semseg:10", "train:1"])
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "ckpt"], choices=["fp32", "bf16", "ckpt"])
    parser.add_argument(
        "--official-malloc", nargs="+", default=["system"], choices=["system", "jemalloc"],
        help="allocators to run the official code on (jemalloc: also the like-for-like baseline)",
    )  # fmt: skip
    parser.add_argument(
        "--onednn-isa", default=None, help="ONEDNN_MAX_CPU_ISA for every process, e.g. AVX512_CORE (no bf16 insns)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--n", type=int, default=2, help="timed forwards per process")
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", default=None, help="also write the JSON here (rewritten after every process)")
    parser.add_argument("--table-from", default=None, help="print the markdown table of a saved JSON and exit")
    args = parser.parse_args()
    if args.table_from:
        print(markdown(json.loads(Path(args.table_from).read_text())))
        return
    if not (Path(args.official_root) / "venv" / "bin" / "python").is_file():
        parser.error(f"--official-root {args.official_root!r}: no venv/bin/python (run the runner's setup.sh)")
    jemalloc = find_jemalloc()
    if "jemalloc" in args.official_malloc and jemalloc is None:
        parser.error("--official-malloc jemalloc: no libjemalloc found (apt install libjemalloc2)")
    results = {"tool": "side_by_side", "args": vars(args), "loadavg_at_start": os.getloadavg(), "jobs": []}

    def save():
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")

    for round_index in range(args.rounds):
        for spec in args.jobs:
            job, _, raw = spec.partition(":")
            value = int(raw or 1)
            variants = [v for v in args.variants if v != "ckpt" or job == "train"]
            runs = [  # (name, command, the official process's allocator; rsam's own choose theirs)
                ("official" if malloc == "system" else f"official_{malloc}", official_command(args, job, value), malloc)
                for malloc in args.official_malloc
            ]
            runs += [(f"rsam_{v}", rsam_command(args, job, value, v), None) for v in variants]
            if round_index % 2:
                runs.reverse()
            entry = {"job": spec, "round": round_index + 1, "order": [name for name, *_ in runs], "figures": {}}
            results["jobs"].append(entry)
            for name, command, allocator in runs:
                need, free = needed_gib(job, value, name.removeprefix("rsam_")), mem_available_gib()
                if free < need:  # a shared machine: never push others into the OOM killer
                    entry["figures"][name] = {"error": f"skipped: MemAvailable {free:.1f} GiB < {need:.1f} GiB"}
                    continue
                print(f"[side_by_side] round {round_index + 1} {spec} {name} ...", file=sys.stderr, flush=True)
                env = {**os.environ, "OFFICIAL_ROOT": str(Path(args.official_root).resolve())}
                if args.onednn_isa:
                    env["ONEDNN_MAX_CPU_ISA"] = args.onednn_isa
                if allocator == "jemalloc":
                    env.update(LD_PRELOAD=jemalloc, MALLOC_CONF=JEMALLOC_CONF)
                entry["figures"][name] = figures(run_json(command, args.timeout, env=env), job, allocator)
                save()
            for _, base, official, name, found in _pairs({"jobs": [entry]}):
                if "error" in found or "error" in official:
                    continue
                key = "ratios" if base == "official" else f"ratios_vs_{base}"
                entry.setdefault(key, {})[name] = {k: round(v, 3) for k, v in ratios(found, official).items()}
            save()
    results["loadavg_at_end"] = os.getloadavg()
    save()
    print(json.dumps(results, indent=1))
    print(markdown(results), file=sys.stderr)


if __name__ == "__main__":
    main()

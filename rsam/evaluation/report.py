"""Results of a benchmark run as files: ``results.md`` (headline table + per-class tables) and ``results.json``.

Fractions are shown x100 in the Markdown (as :func:`rsam.evaluation.runner.results_markdown`); the JSON keeps the raw
values. Per-class entries that are ``None`` (a class without ground truth) print as ``-``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rsam.evaluation.runner import results_markdown

MARKDOWN_NAME = "results.md"
JSON_NAME = "results.json"


def _percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}" if isinstance(value, float) else str(value)


def per_class_markdown(result: dict) -> str:
    """One table, a row per class and a column per dict-valued metric (e.g. ``AP50_per_class``)."""
    tables = {key: value for key, value in result.items() if isinstance(value, dict)}
    if not tables:
        return ""
    classes = list(dict.fromkeys(name for table in tables.values() for name in table))
    lines = ["| class | " + " | ".join(tables) + " |", "|---|" + "---:|" * len(tables)]
    lines += [
        f"| {name} | " + " | ".join(_percent(table.get(name)) for table in tables.values()) + " |" for name in classes
    ]
    return "\n".join(lines)


def results_document(name: str, result: dict, metrics: Sequence[str], info: dict) -> str:
    lines = [f"# {name}", "", results_markdown(name, result, metrics), ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    table = per_class_markdown(result)
    if table:
        lines += ["", "## Per class", "", table]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | Path, name: str, result: dict, metrics: Sequence[str], info: dict
) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` (``{"benchmark", **info, "metrics": result}``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / MARKDOWN_NAME
    markdown.write_text(results_document(name, result, metrics, info), encoding="utf-8")
    payload = {"benchmark": name, **info, "metrics": result}
    data = out / JSON_NAME
    data.write_text(json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n", encoding="utf-8")
    return markdown, data

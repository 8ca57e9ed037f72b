"""Read an offline wandb run file (``run-<id>.wandb``) without the network or a wandb server.

The file is ``:W&B`` + 2 magic bytes + a version byte, then LevelDB-log records (32 KiB blocks; 7-byte record
headers: crc32, little-endian length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) whose payloads are
``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: str | Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer
            pos += room
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload


def history(path: str | Path) -> list[dict]:
    """Every logged history row as ``{key: decoded value}``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for payload in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return rows

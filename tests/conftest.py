"""Shared test fixtures. Everything runs offline: no hub, no network, no wandb login."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]


def _find_reference() -> Path:
    """$RSAM_REFERENCE_DIR, else ../shared/reference next to the checkout, else /work/shared/reference."""
    candidates = [os.environ.get("RSAM_REFERENCE_DIR"), REPO.parent / "shared" / "reference", "/work/shared/reference"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tiny_config.json").is_file():
            return Path(candidate)
    return Path(candidates[1])


SHARED_REFERENCE = _find_reference()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The golden files of the official code (``../shared/reference``); tests needing them skip loudly if absent."""
    if not (SHARED_REFERENCE / "tiny_config.json").is_file():
        pytest.skip(f"golden reference folder not found at {SHARED_REFERENCE} (set RSAM_REFERENCE_DIR)")
    return SHARED_REFERENCE


@pytest.fixture(autouse=True)
def _clean_distributed_env(monkeypatch):
    """Each test gets a free MASTER_PORT and no leaked rank / Slurm variables (Lightning writes them to os.environ)."""
    for key in list(os.environ):
        if key in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"} or key.startswith(
            "SLURM_"
        ):
            monkeypatch.delenv(key, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))

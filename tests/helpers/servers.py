"""Real servers for the data-source tests, each started on 127.0.0.1 with a free port and stopped by pid.

- :func:`http_server`: ``python -m http.server`` serving a folder; its request log is kept so tests can count GETs.
- :func:`s3_server`: moto's standalone S3-compatible server (``python -m moto.server``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server for {url} did not start within {timeout} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class HttpServer:
    def __init__(self, folder: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_handle = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )
        _wait_for(self.url + "/", self.process)

    def gets(self, name: str) -> int:
        """How many GET requests for a path ending in ``name`` the server logged."""
        self._log_handle.flush()
        return sum(1 for line in self.log.read_text().splitlines() if '"GET ' in line and f"/{name} " in line)

    def stop(self) -> None:
        _stop(self.process)
        self._log_handle.close()


@contextlib.contextmanager
def http_server(folder: Path, log: Path):
    server = HttpServer(folder, log)
    try:
        yield server
    finally:
        server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(log: Path):
    """Yields the endpoint URL of a fresh moto S3 server; set ``AWS_ENDPOINT_URL`` to it (and :data:`S3_ENV`)."""
    port = free_port()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **S3_ENV},
        )
        try:
            _wait_for(f"http://127.0.0.1:{port}/", process)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


def upload_folder(endpoint: str, bucket: str, prefix: str, folder: Path) -> None:
    """Create ``bucket`` and put every file of ``folder`` under ``prefix/`` (boto3, endpoint given explicitly)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{k.lower(): v for k, v in S3_ENV.items() if "KEY" in k},
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=bucket)
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")

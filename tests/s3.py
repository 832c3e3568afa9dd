"""A local S3 server for the tests: moto's, the one DVC's own test suite uses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def need_cluster_requirements() -> None:
    """requirements-cluster.txt (dvc-s3, moto, ray): CI installs it; elsewhere its tests are skipped."""
    for module in ("dvc_s3", "moto", "boto3"):
        if os.environ.get("CI"):
            __import__(module)
        else:
            pytest.importorskip(module)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(folder: Path, *, bucket: str) -> Iterator[str]:
    """Start moto's S3 server on a free port of 127.0.0.1 with ``bucket``; yields its endpoint URL."""
    import boto3

    port = free_port()
    log = (folder / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()

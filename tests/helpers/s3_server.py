"""An S3-compatible object store on loopback for tests: moto's standalone server, its own process.

    with s3_server() as env:        # env: the AWS variables that point clients at it
        os.environ.update(env)      # or pass env to a subprocess / Ray runtime_env
        create_bucket("runs")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from orchestration.local_head import free_port


def s3_env(port: int) -> dict[str, str]:
    """The standard AWS environment for a store at 127.0.0.1:port (moto accepts any keys)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def s3_server(timeout_s: float = 30.0) -> Iterator[dict[str, str]]:
    """Run `moto.server` on a free loopback port; yield its AWS environment; stop it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.1)
        yield s3_env(port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def create_bucket(name: str, env: dict[str, str]) -> None:
    """Create bucket `name` on the store that `env` (from s3_server) points at."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=env["AWS_ENDPOINT_URL"].split("://", 1)[1], scheme="http",
        region=env["AWS_REGION"], allow_bucket_creation=True,
    )
    fs.create_dir(name)

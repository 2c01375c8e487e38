"""An S3-compatible object store on loopback, as its own process: moto's standalone server.

Every node and job of the rehearsal reaches it through the standard AWS environment variables
(`AWS_ENDPOINT_URL`, keys, region), so pyarrow's S3 filesystem, which Ray Train and Ray Data
use for `s3://` locations, needs no endpoint in any configuration. The server keeps its
objects in memory: stopping it loses them, so an outage is `halt()` (the process stopped,
SIGSTOP) then `resume()`; its port stays the same across `stop()` / `start()`.

    with ObjectStore() as store:
        store.env       # AWS_* for every node and job
        store.uri("x")  # s3://<bucket>/x
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orchestration.local_head import free_port

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
BUCKET = "rehearsal"


class ObjectStore:
    """`moto_server` on 127.0.0.1:<port>, one bucket; start()/stop() may repeat."""

    def __init__(self, bucket: str = BUCKET, port: int | None = None) -> None:
        self.bucket = bucket
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What every node, job and client needs to reach the store (dummy keys: moto checks
        none)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": "rehearsal",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def start(self, create_bucket: bool = True, timeout_s: float = 60.0) -> None:
        if MOTO_SERVER and not Path(MOTO_SERVER).exists():
            raise RuntimeError(
                f"{MOTO_SERVER} is missing: install the dev extra (pip install -e '.[dev]', "
                "which holds moto[server])"
            )
        self.proc = subprocess.Popen(
            [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                httpx.get(self.endpoint, timeout=2.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto_server did not answer on {self.endpoint}") from None
                time.sleep(0.3)
        if create_bucket:
            self.filesystem().create_dir(self.bucket)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def halt(self) -> None:
        """Stop the server's process (SIGSTOP): connections are accepted, nothing answers, as
        in an outage. Killing it would lose every object, which moto keeps in memory only."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let the halted server run again (SIGCONT), with its objects."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def filesystem(self):
        """pyarrow's S3 filesystem on this store (for the submitter's own reads and writes)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            endpoint_override=self.endpoint, access_key="rehearsal", secret_key="rehearsal",
            region="us-east-1", scheme="http", allow_bucket_creation=True,
            # moto assembles a multipart upload in Python: a GB-sized one outlasts the SDK's
            # default 3 s for the answer to CompleteMultipartUpload.
            request_timeout=600,
        )

    def upload(self, local: Path, key: str) -> str:
        """Copy a local file or folder to s3://<bucket>/<key>; returns that URI."""
        from pyarrow import fs

        local = Path(local)
        target = f"{self.bucket}/{key}"
        s3 = self.filesystem()
        if local.is_dir():
            fs.copy_files(str(local), target, source_filesystem=fs.LocalFileSystem(),
                          destination_filesystem=s3)
        else:
            with local.open("rb") as src, s3.open_output_stream(target) as dst:
                while chunk := src.read(64 << 20):
                    dst.write(chunk)
        return self.uri(key)

    def read_text(self, uri: str) -> str:
        with self.filesystem().open_input_stream(uri.removeprefix("s3://")) as f:
            return f.read().decode()

    def exists(self, uri: str) -> bool:
        from pyarrow import fs

        info = self.filesystem().get_file_info(uri.removeprefix("s3://"))
        return info.type != fs.FileType.NotFound

    def list(self, uri: str) -> list[str]:
        from pyarrow import fs

        selector = fs.FileSelector(uri.removeprefix("s3://"), recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.filesystem().get_file_info(selector))

    def __enter__(self) -> ObjectStore:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""Do the cluster's nodes share no disk? A job that answers it (run by `ray job submit`).

    python -m orchestration.cluster_rehearsal.isolation_probe node_a node_b s3://bucket/probe

A task pinned to the first node (by its custom resource) writes a marker under /tmp, under
the checkout's outputs/ and under the object store's URI; a task pinned to the second node
looks for all three. Prints one JSON line: the second node must see the object only.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import ray

from orchestration.paths import REPO_ROOT


def _locations(uri: str, token: str) -> dict[str, str]:
    return {"tmp": f"/tmp/probe-{token}", "outputs": str(REPO_ROOT / "outputs" / f"probe-{token}"),
            "object_store": f"{uri}/probe-{token}"}


def _write(uri: str, token: str) -> str:
    from pyarrow import fs

    where = _locations(uri, token)
    for key in ("tmp", "outputs"):
        Path(where[key]).parent.mkdir(parents=True, exist_ok=True)
        Path(where[key]).write_text(token)
    s3, path = fs.FileSystem.from_uri(where["object_store"])
    with s3.open_output_stream(path) as out:
        out.write(token.encode())
    return ray.get_runtime_context().get_node_id()


def _look(uri: str, token: str) -> dict:
    from pyarrow import fs

    where = _locations(uri, token)
    s3, path = fs.FileSystem.from_uri(where["object_store"])
    return {"node": ray.get_runtime_context().get_node_id(),
            "tmp": Path(where["tmp"]).exists(), "outputs": Path(where["outputs"]).exists(),
            "object_store": s3.get_file_info(path).type != fs.FileType.NotFound}


def main(argv: list[str]) -> int:
    writer_node, reader_node, uri = argv
    token = uuid.uuid4().hex[:8]
    write = ray.remote(num_cpus=0, resources={writer_node: 0.01})(_write)
    look = ray.remote(num_cpus=0, resources={reader_node: 0.01})(_look)
    written_on = ray.get(write.remote(uri, token))
    seen = ray.get(look.remote(uri, token))
    print(json.dumps({"writer": written_on, "reader": seen.pop("node"), "seen": seen}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

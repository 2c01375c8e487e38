"""Latent Parquet shards and the job manifest, on local disk or object storage (pyarrow fs).

Shard schema (what `trainer.data` reads with `data.train_path=<output>`):
  latent        binary       safetensors bytes of one (1, C, h, w) latent, already scaled
  latent_shape  list<int32>  [C, h, w]
  caption       string
  key           string       the WebDataset `__key__` (or Parquet row id) of the source sample

Each batch of encoded rows becomes one shard named by a hash of its sample keys, so a retried
Ray task rewrites the same file instead of adding a duplicate. The writer returns one stats row
per shard and one per skipped sample; the driver folds them into `manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from orchestration.data.samples import SKIP_REASONS
from rglcd import storage

MANIFEST_NAME = "manifest.json"
SHARD_SCHEMA = pa.schema(
    [
        ("latent", pa.binary()),
        ("latent_shape", pa.list_(pa.int32())),
        ("caption", pa.string()),
        ("key", pa.string()),
    ]
)


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or a URI such as s3://bucket/dir (rglcd/storage.py:
    an S3 endpoint from the AWS environment; a relative path is read on the node that opens
    it, whose working directory is the job's)."""
    filesystem, path = storage.parse(uri)
    return filesystem, path.rstrip("/")


def _join(root: str, name: str) -> str:
    return f"{root}/{name}" if root else name


def shard_name(keys: Iterable[str]) -> str:
    digest = hashlib.blake2b(digest_size=10)
    for key in keys:
        digest.update(str(key).encode("utf-8") + b"\x00")
    return f"latents-{digest.hexdigest()}.parquet"


def write_shard(batch: dict[str, np.ndarray], output: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: encoded rows -> one Parquet shard of the good rows; returns stats rows."""
    reasons = [str(r) for r in batch["skip_reason"]]
    ok = [i for i, reason in enumerate(reasons) if not reason]
    stats: list[dict[str, Any]] = []
    if ok:
        filesystem, root = resolve_uri(output)
        keys = [str(batch["key"][i]) for i in ok]
        table = pa.table(
            {
                "latent": [bytes(batch["latent"][i]) for i in ok],
                "latent_shape": [list(map(int, batch["latent_shape"][i])) for i in ok],
                "caption": [str(batch["caption"][i]) for i in ok],
                "key": keys,
            },
            schema=SHARD_SCHEMA,
        )
        name = shard_name(keys)
        pq.write_table(table, _join(root, name), filesystem=filesystem)
        shape = list(map(int, batch["latent_shape"][ok[0]]))
        stats.append(_stats_row("shard", name, rows=len(ok), shape=shape))
    for i, reason in enumerate(reasons):
        if reason:
            detail = str(batch["skip_detail"][i])
            stats.append(_stats_row("skipped", str(batch["key"][i]), reason, detail))
    return {name: np.array([s[name] for s in stats], dtype=object) for name in _STATS_COLUMNS}


_STATS_COLUMNS = ("kind", "name", "reason", "detail", "rows", "shape")


def _stats_row(kind, name, reason="", detail="", rows=0, shape=None) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "reason": reason,
        "detail": detail,
        "rows": rows,
        "shape": json.dumps(shape),
    }


def build_manifest(stats: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict:
    """Fold the writer's stats rows into the manifest (shards sorted by name)."""
    shards, skipped, shapes = [], [], set()
    for row in stats:
        if row["kind"] == "shard":
            shards.append({"file": row["name"], "rows": int(row["rows"])})
            shapes.add(row["shape"])
        else:
            skipped.append({"key": row["name"], "reason": row["reason"], "detail": row["detail"]})
    if len(shapes) > 1:  # cannot happen with one resolution and one VAE; guards the contract
        raise AssertionError(f"shards disagree on the latent shape: {sorted(shapes)}")
    counts = Counter(s["reason"] for s in skipped)
    return {
        **settings,
        "latent_shape": json.loads(shapes.pop()) if shapes else None,
        "num_written": sum(s["rows"] for s in shards),
        "num_skipped": len(skipped),
        "skipped_by_reason": {reason: counts.get(reason, 0) for reason in SKIP_REASONS},
        "skipped": sorted(skipped, key=lambda s: s["key"]),
        "shards": sorted(shards, key=lambda s: s["file"]),
    }


def write_manifest(output: str, manifest: Mapping[str, Any]) -> str:
    filesystem, root = resolve_uri(output)
    path = _join(root, MANIFEST_NAME)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(manifest, indent=2).encode("utf-8"))
    return path


def existing_outputs(output: str) -> list[str]:
    """Shards or a manifest already in `output` (the job refuses to mix runs)."""
    filesystem, root = resolve_uri(output)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        return []
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"output={output!r} is a file; pass a folder (it is created if absent)")
    found = filesystem.get_file_info(pafs.FileSelector(root, recursive=False))
    return sorted(
        f.base_name
        for f in found
        if f.base_name == MANIFEST_NAME or f.base_name.endswith(".parquet")
    )


def prepare_output(output: str, overwrite: bool) -> None:
    """Create `output`; with `overwrite`, delete the shards and manifest of an earlier run."""
    filesystem, root = resolve_uri(output)
    stale = existing_outputs(output)
    if stale and not overwrite:
        raise ValueError(
            f"--output {output!r} already holds {len(stale)} shard/manifest file(s) (e.g. "
            f"{stale[0]}); pass a new folder or overwrite=true to replace them"
        )
    for name in stale:
        filesystem.delete_file(_join(root, name))
    filesystem.create_dir(root, recursive=True)

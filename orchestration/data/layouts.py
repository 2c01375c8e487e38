"""Input layouts the data job recognises by their file names."""

from __future__ import annotations

from pathlib import PurePosixPath


def is_img2dataset_webdataset(names: list[str]) -> bool:
    """img2dataset's `--output_format webdataset` folder: `00000.tar` shards, each beside a
    `00000.parquet` metadata sidecar (url, caption, key, status; no images) and a
    `00000_stats.json`. The tars hold the samples; every .parquet file is some tar's sidecar."""
    tars = {PurePosixPath(n).stem for n in names if n.endswith(".tar")}
    sidecars = {PurePosixPath(n).stem for n in names if n.endswith(".parquet")}
    return bool(tars) and bool(sidecars) and sidecars <= tars

"""Parquet shards of toy scenes: the same (image PNG bytes, caption) format the real data reads.

Columns: ``image`` (PNG bytes, 32x32 RGB), ``caption`` (str) and the scene attributes
``size``, ``colour``, ``shape``, ``bg`` (str), ``width`` (int), ``x``, ``y`` (float).
Shards are named ``{split}-{index:05d}.parquet``; a ``{split}.done.json`` marker records
(n, seed) so :func:`ensure_toy_dataset` regenerates only when they change.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rglcd.toy.scenes import render, sample_scenes

ROWS_PER_SHARD = 10_000


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _scene_table(scenes: list) -> pa.Table:
    rows = [s.as_dict() for s in scenes]
    columns = {key: [r[key] for r in rows] for key in rows[0]}
    columns["caption"] = [s.caption for s in scenes]
    columns["image"] = [encode_png(render(s)) for s in scenes]
    return pa.table(columns)


def write_toy_dataset(directory: str | Path, split: str, n: int, seed: int = 0) -> list[Path]:
    """Render `n` scenes of `split` and write them as Parquet shards into `directory`."""
    if n <= 0:
        raise ValueError(f"n={n} must be a positive number of images.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob(f"{split}-*.parquet"):
        old.unlink()
    scenes = sample_scenes(split, n, seed)
    paths = []
    for index, start in enumerate(range(0, n, ROWS_PER_SHARD)):
        path = directory / f"{split}-{index:05d}.parquet"
        pq.write_table(_scene_table(scenes[start : start + ROWS_PER_SHARD]), path)
        paths.append(path)
    marker = {"split": split, "n": n, "seed": seed, "shards": [p.name for p in paths]}
    (directory / f"{split}.done.json").write_text(json.dumps(marker), encoding="utf-8")
    return paths


def ensure_toy_dataset(directory: str | Path, split: str, n: int, seed: int = 0) -> list[Path]:
    """Shards of `split` in `directory`, generated only if missing or made with other (n, seed).

    Deterministic: the same (split, n, seed) always yields byte-identical images and captions.
    40k images take about half a minute on one core.
    """
    directory = Path(directory)
    marker_path = directory / f"{split}.done.json"
    if marker_path.exists():
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        paths = [directory / name for name in marker["shards"]]
        if marker["n"] == n and marker["seed"] == seed and all(p.exists() for p in paths):
            return paths
    return write_toy_dataset(directory, split, n, seed)


def shard_paths(directory: str | Path, split: str) -> list[Path]:
    paths = sorted(Path(directory).glob(f"{split}-*.parquet"))
    if not paths:
        raise ValueError(
            f"no '{split}-*.parquet' shards in {directory}; create them with "
            "rglcd.toy.data.ensure_toy_dataset(directory, split, n)."
        )
    return paths


def read_toy_table(directory: str | Path, split: str) -> pa.Table:
    """All shards of `split` as one Arrow table (columns as in the module docstring)."""
    return pa.concat_tables([pq.read_table(p) for p in shard_paths(directory, split)])


def read_toy_images(directory: str | Path, split: str) -> tuple[np.ndarray, list[str]]:
    """(N, 32, 32, 3) uint8 images and their N captions from the shards of `split`."""
    table = read_toy_table(directory, split)
    images = np.stack([decode_png(b) for b in table.column("image").to_pylist()])
    return images, table.column("caption").to_pylist()

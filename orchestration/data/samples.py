"""Raw (image bytes, caption) samples -> fixed-size uint8 pixels, or a reason to skip them.

Plain functions, no Ray: the data job (orchestration/commands/data_job.py) calls them inside
Ray Data `map_batches` stages, and tests call them directly.

A sample is skipped, never raised on, when its image is missing, cannot be decoded (corrupt,
truncated, unknown format, decompression bomb) or is smaller than `min_size` on its short side,
or when its caption is missing or empty. Each skip carries one of `SKIP_REASONS` and a detail
string, so the job can report exactly which samples it dropped and why.

Resizing follows the trainer's `trainer.data.load_image` exactly (shortest side to R with
bicubic, PIL's always-antialiased filter, then a centre crop; docs/method.md §6 on resize
antialiasing), so latents written by the job equal what the trainer would encode from images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from trainer.data import content_key

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
CAPTION_SUFFIXES = ("txt", "json")
SKIP_REASONS = ("missing_image", "missing_caption", "undecodable", "too_small")
# Captions inside a WebDataset `.json` member, in the order they are looked for (img2dataset
# writes "caption"; some CC12M mirrors use "text").
JSON_CAPTION_KEYS = ("caption", "text", "prompt")


class SkipSample(Exception):
    """A sample the job drops; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _as_bytes(value: Any) -> bytes | None:
    """Raw member bytes, or None for a missing value (None / NaN from a ragged table)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes()
    return None


def webdataset_image(sample: Mapping[str, Any]) -> bytes | None:
    """The image bytes of a WebDataset sample (first of `IMAGE_SUFFIXES` present)."""
    for suffix in IMAGE_SUFFIXES:
        raw = _as_bytes(sample.get(suffix))
        if raw:
            return raw
    return None


def webdataset_caption(sample: Mapping[str, Any]) -> str | None:
    """The caption of a WebDataset sample: `.txt`, else a caption key of `.json`."""
    text = _as_bytes(sample.get("txt"))
    if text is not None:
        return text.decode("utf-8", errors="replace").strip() or None
    meta = _as_bytes(sample.get("json"))
    if meta is None:
        return None
    try:
        record = json.loads(meta)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    for key in JSON_CAPTION_KEYS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key].strip()
    return None


def open_image(raw: bytes | None, min_size: int) -> Image.Image:
    """Decode image bytes into an RGB PIL image at least `min_size` on its short side.

    Raises SkipSample("missing_image" | "undecodable" | "too_small", detail).
    """
    if not raw:
        raise SkipSample("missing_image", "the sample has no image member")
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
        width, height = image.size
        if min(width, height) < min_size:  # decided on the header, before decoding pixels
            raise SkipSample("too_small", f"{width}x{height} is below min_size={min_size}")
        image.load()
        return image.convert("RGB")
    except SkipSample:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise SkipSample("undecodable", f"{type(err).__name__}: {err}") from None


def resize_center_crop(image: Image.Image, resolution: int) -> np.ndarray:
    """RGB image -> (R, R, 3) uint8: shortest side to R (bicubic), centre crop.

    Mirrors `trainer.data.load_image` step for step (before its float conversion).
    """
    scale = resolution / min(image.size)
    if scale != 1.0:
        size = (
            max(resolution, round(image.width * scale)),
            max(resolution, round(image.height * scale)),
        )
        image = image.resize(size, Image.Resampling.BICUBIC)  # PIL always antialiases
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.uint8)


def prepare_sample(
    raw: bytes | None, caption: str | None, resolution: int, min_size: int
) -> tuple[np.ndarray, int]:
    """One sample -> ((R, R, 3) uint8 pixels, 63-bit sample key); SkipSample when unusable.

    The key is `trainer.data.content_key(image bytes, caption)`, the key the trainer gives
    the same sample read from image shards, so both paths draw the same VAE posterior noise.
    """
    image = open_image(raw, min_size)
    if not caption:
        raise SkipSample("missing_caption", "the sample has no .txt caption or json caption")
    return resize_center_crop(image, resolution), content_key(raw, caption)

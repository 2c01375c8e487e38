"""Base64 codecs for images and latents, shared by the reward service and its clients.

Everything here decodes untrusted bytes, so nothing uses pickle: images are PNG or JPEG (PIL,
with an explicit pixel limit checked on the header *before* decoding, against decompression
bombs), latents are safetensors or `.npy` (`allow_pickle=False`). Every failure a sender can
cause raises `ValueError` (or its subclass `PayloadTooLargeError`) with a message saying what
was wrong and what to send instead.

Conventions: images are float32 tensors in [0, 1], shape (3, H, W) for one image or
(N, 3, H, W) for a batch; latents are float32 tensors of shape (N, C, h, w) as produced by
`vae.encode(x).latent_dist.sample() * scaling_factor` (docs/method.md §1).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

IMAGE_FORMATS = ("PNG", "JPEG")
NPY_MAGIC = b"\x93NUMPY"
LATENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class PayloadTooLargeError(ValueError):
    """The input is well-formed but larger than the configured limit (HTTP 413)."""


def b64decode(data: str, what: str = "data") -> bytes:
    """Strict base64 (standard alphabet, optional `data:...;base64,` prefix) -> bytes."""
    if not isinstance(data, str):
        raise ValueError(f"{what} must be a base64 string, got {type(data).__name__}")
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"{what} is not valid base64 ({err}); send standard base64") from None


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ---------------------------------------------------------------- images


def decode_image_uint8(raw: bytes, max_pixels: int, what: str = "image") -> torch.Tensor:
    """PNG/JPEG bytes -> (3, H, W) uint8 RGB; the size is checked before decoding."""
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as err:  # PIL's own limit, hit while reading the header
        raise PayloadTooLargeError(f"{what} is too large: {err}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{what} could not be read as PNG or JPEG ({err})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels}; downscale it before sending"
        )
    try:
        image.load()
        rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{what} is a truncated or corrupt {image.format} ({err})") from None
    array = np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_image(raw: bytes, max_pixels: int, what: str = "image") -> torch.Tensor:
    """PNG/JPEG bytes -> (3, H, W) float32 in [0, 1]; the size is checked before decoding."""
    return decode_image_uint8(raw, max_pixels, what).float().div_(255.0)


def decode_image_b64(data: str, max_pixels: int, what: str = "image") -> torch.Tensor:
    """Base64 PNG/JPEG -> (3, H, W) float32 in [0, 1]."""
    return decode_image(b64decode(data, what), max_pixels, what)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding to nearest."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one image of shape (3, H, W), got {tuple(image.shape)}")
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def encode_image(image: torch.Tensor, fmt: str = "PNG", quality: int = 95) -> bytes:
    """(3, H, W) float in [0, 1] -> PNG (lossless) or JPEG bytes."""
    fmt = fmt.upper()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt!r} is not supported; use one of {IMAGE_FORMATS}")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image_to_uint8(image)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encode_image_b64(image: torch.Tensor, fmt: str = "PNG", quality: int = 95) -> str:
    return b64encode(encode_image(image, fmt, quality))


# ---------------------------------------------------------------- latents


def _looks_like_safetensors(raw: bytes) -> bool:
    if len(raw) < 10:
        return False
    (header_len,) = struct.unpack("<Q", raw[:8])
    return 0 < header_len <= len(raw) - 8 and raw[8:9] == b"{"


def _load_safetensors(raw: bytes) -> torch.Tensor:
    try:
        tensors = safetensors_load(raw)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"latents are not a valid safetensors file ({err})") from None
    if len(tensors) != 1:
        raise ValueError(
            f"latents safetensors must hold exactly one tensor, found {sorted(tensors)}"
        )
    return next(iter(tensors.values()))


def _load_npy(raw: bytes) -> torch.Tensor:
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"latents are not a valid .npy array without pickle ({err})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise ValueError(f"latents .npy must hold a float array, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_latents(latents: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """Validate a latent batch (N, C, h, w): floating, finite, non-empty -> float32."""
    if latents.dtype not in LATENT_DTYPES:
        raise ValueError(f"latents must be floating point, got dtype {latents.dtype}")
    if latents.ndim != 4 or latents.numel() == 0:
        raise ValueError(
            f"latents must have shape [N, C, H, W] with no empty axis, got {list(latents.shape)}"
        )
    if channels is not None and latents.shape[1] != channels:
        raise ValueError(
            f"latents have {latents.shape[1]} channels but this VAE expects {channels}; "
            f"shape was {list(latents.shape)}"
        )
    latents = latents.float()
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinite values")
    return latents


def decode_latents(raw: bytes) -> torch.Tensor:
    """Safetensors (one tensor) or .npy bytes -> validated float32 latents (N, C, h, w)."""
    if raw.startswith(NPY_MAGIC):
        latents = _load_npy(raw)
    elif _looks_like_safetensors(raw):
        latents = _load_safetensors(raw)
    else:
        raise ValueError("latents must be a safetensors file or a .npy array (base64-encoded)")
    return check_latents(latents)


def decode_latents_b64(data: str) -> torch.Tensor:
    return decode_latents(b64decode(data, "latents"))


def encode_latents(latents: torch.Tensor, fmt: str = "safetensors") -> bytes:
    """(N, C, h, w) tensor -> safetensors (key "latents") or .npy bytes."""
    latents = latents.detach().contiguous().cpu()
    if fmt == "safetensors":
        return safetensors_save({"latents": latents})
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, latents.float().numpy(), allow_pickle=False)
        return buffer.getvalue()
    raise ValueError(f"latent format {fmt!r} is not supported; use 'safetensors' or 'npy'")


def encode_latents_b64(latents: torch.Tensor, fmt: str = "safetensors") -> str:
    return b64encode(encode_latents(latents, fmt))

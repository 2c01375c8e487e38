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
import math
import struct

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

IMAGE_FORMATS = ("PNG", "JPEG")
NPY_MAGIC = b"\x93NUMPY"
LATENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NPY_DTYPES = tuple(np.dtype(f"{order}f{size}") for order in "<>" for size in (2, 4, 8))


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


def open_image(raw: bytes, what: str = "image") -> Image.Image:
    """PNG/JPEG bytes -> a PIL image whose header is read and whose pixels are NOT decoded
    yet, so a caller can check `image.size` before paying for the pixels."""
    try:
        return Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:  # PIL's own limit, hit while reading the header
        raise PayloadTooLargeError(f"{what} is too large: {err}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{what} could not be read as PNG or JPEG ({err})") from None


def check_image_size(
    width: int, height: int, max_pixels: int, what: str = "image",
    max_aspect_ratio: float | None = None,
) -> None:
    """Refuse an image size before any decode or resize: too many pixels (PayloadTooLargeError)
    or, when `max_aspect_ratio` is given, too thin (ValueError)."""
    if width < 1 or height < 1:
        raise ValueError(f"{what} has an empty side ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels}; downscale it before sending"
        )
    ratio = max(width, height) / min(width, height)
    if max_aspect_ratio is not None and ratio > max_aspect_ratio:
        raise ValueError(
            f"{what} is {width}x{height}, an aspect ratio of {ratio:.1f}, above the limit of "
            f"{max_aspect_ratio:g}; crop or pad it closer to square before sending"
        )


def decode_image_uint8(raw: bytes, max_pixels: int, what: str = "image") -> torch.Tensor:
    """PNG/JPEG bytes -> (3, H, W) uint8 RGB; the size is checked before decoding."""
    image = open_image(raw, what)
    check_image_size(*image.size, max_pixels, what)
    return decode_opened_image(image, what)


def decode_opened_image(image: Image.Image, what: str = "image") -> torch.Tensor:
    """A PIL image from `open_image` (size already checked) -> (3, H, W) uint8 RGB."""
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


def _npy_header(stream: io.BytesIO) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, checked before any array memory is allocated."""
    try:
        version = np.lib.format.read_magic(stream)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"format version {version} is not supported (send 1.0 or 2.0)")
        shape, _, dtype = read(stream)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"latents are not a valid .npy array without pickle ({err})") from None
    if dtype not in NPY_DTYPES:
        raise ValueError(
            f"latents .npy dtype {dtype} is not supported; send float16, float32 or float64"
        )
    return shape, dtype


def _load_npy(raw: bytes) -> torch.Tensor:
    stream = io.BytesIO(raw)
    shape, dtype = _npy_header(stream)
    # The header may claim any shape: it must match the bytes that were actually sent.
    payload = len(raw) - stream.tell()
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != payload:
        raise ValueError(
            f"latents .npy header claims shape {list(shape)} of {dtype} ({claimed} bytes) but "
            f"{payload} bytes follow it; send the file np.save wrote, unmodified"
        )
    stream.seek(0)
    try:
        array = np.load(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"latents are not a valid .npy array without pickle ({err})") from None
    native = array.astype(array.dtype.newbyteorder("="), copy=False)  # torch needs native order
    return torch.from_numpy(np.ascontiguousarray(native))


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

"""Codecs for untrusted images and latents: round trips, limits, and refusal of bad input."""

from __future__ import annotations

import base64
import io
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from rglcd import codecs


def _image(seed: int = 0, size: tuple[int, int] = (12, 16)) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(3, *size)


def test_png_round_trip_is_exact_at_8_bits():
    image = _image()
    decoded = codecs.decode_image_b64(codecs.encode_image_b64(image), max_pixels=10_000)
    assert decoded.shape == (3, 12, 16) and decoded.dtype == torch.float32
    expected = torch.from_numpy(codecs.image_to_uint8(image)).permute(2, 0, 1).float() / 255
    assert torch.equal(decoded, expected)
    assert (decoded - image).abs().max() <= 0.5 / 255 + 1e-6


def test_jpeg_round_trip_is_close_and_data_url_prefix_is_accepted():
    image = torch.full((3, 16, 16), 0.25)
    image[0] = 0.8
    data = "data:image/jpeg;base64," + codecs.encode_image_b64(image, fmt="JPEG")
    decoded = codecs.decode_image_b64(data, max_pixels=10_000)
    assert (decoded - image).abs().max() < 0.03


def test_grayscale_and_rgba_png_become_rgb():
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 4), (10, 20, 30, 40)).save(buffer, format="PNG")
    decoded = codecs.decode_image(buffer.getvalue(), max_pixels=100)
    assert decoded.shape == (3, 4, 5)
    assert torch.allclose(decoded[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)


def test_pixel_limit_is_checked_before_decoding():
    # A 4000x4000 black PNG is ~50 KB compressed but 48 MB decoded: a small decompression bomb.
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 200_000
    with pytest.raises(codecs.PayloadTooLargeError, match="16000000 pixels, above the limit"):
        codecs.decode_image(buffer.getvalue(), max_pixels=1_000_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"hello world").decode(), "could not be read as PNG or JPEG"),
        (base64.b64encode(b"GIF89a" + b"\0" * 20).decode(), "could not be read as PNG or JPEG"),
    ],
)
def test_undecodable_images_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        codecs.decode_image_b64(data, max_pixels=10_000)


def test_truncated_png_raises_value_error():
    raw = codecs.encode_image(_image(size=(32, 32)))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        codecs.decode_image(raw[: len(raw) // 2], max_pixels=10_000)


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_latent_round_trip(fmt):
    latents = torch.randn(2, 4, 8, 8)
    decoded = codecs.decode_latents_b64(codecs.encode_latents_b64(latents, fmt))
    assert decoded.dtype == torch.float32 and torch.equal(decoded, latents)


def test_half_precision_latents_are_upcast():
    latents = torch.randn(1, 4, 2, 2).half()
    decoded = codecs.decode_latents(codecs.encode_latents(latents))
    assert decoded.dtype == torch.float32 and torch.equal(decoded, latents.float())


def test_pickled_npy_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="dtype object is not supported"):
        codecs.decode_latents(buffer.getvalue())


def test_raw_pickle_is_refused():
    with pytest.raises(ValueError, match="safetensors file or a .npy array"):
        codecs.decode_latents(pickle.dumps(torch.randn(1, 4, 2, 2)))


@pytest.mark.parametrize(
    ("latents", "message"),
    [
        (torch.randn(4, 8, 8), r"shape \[N, C, H, W\]"),
        (torch.randn(0, 4, 8, 8), "no empty axis"),
        (torch.tensor([[[[float("nan")]]]]), "NaN or infinite"),
        (torch.tensor([[[[float("inf")]]]]), "NaN or infinite"),
        (torch.ones(1, 4, 2, 2, dtype=torch.int32), "floating point"),
    ],
)
def test_invalid_latents_raise_value_error(latents, message):
    with pytest.raises(ValueError, match=message):
        codecs.decode_latents(codecs.encode_latents(latents))


def test_integer_npy_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 4, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="dtype int64 is not supported"):
        codecs.decode_latents(buffer.getvalue())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_of_unsupported_float_width_is_a_value_error():
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        codecs.decode_latents(_npy(np.zeros((1, 4, 2, 2), dtype=np.longdouble)))


def test_npy_header_claiming_more_bytes_than_sent_is_refused_before_allocating():
    raw = _npy(np.zeros((1, 4, 2, 2), dtype=np.float32))
    # The same header with a shape of about 1.5 TB, in the header's padding: refused from the
    # header, nothing allocated.
    start = raw.index(b"(1, 4, 2, 2), }")
    end = raw.index(b"\n", start)
    lying = raw[:start] + b"(9999, 4, 9999, 999), }".ljust(end - start) + raw[end:]
    assert len(lying) == len(raw)
    with pytest.raises(ValueError, match="header claims shape"):
        codecs.decode_latents(lying)


def test_big_endian_npy_decodes_to_the_same_values():
    values = np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2)
    decoded = codecs.decode_latents(_npy(values.astype(">f4")))
    assert torch.equal(decoded, torch.from_numpy(values))


def test_image_size_check_refuses_thin_images_before_decoding():
    codecs.check_image_size(64, 8, 4096, "img", max_aspect_ratio=8)
    with pytest.raises(ValueError, match="aspect ratio of 9.0, above the limit of 8"):
        codecs.check_image_size(72, 8, 4096, "img", max_aspect_ratio=8)
    with pytest.raises(codecs.PayloadTooLargeError, match="above the limit of 4096"):
        codecs.check_image_size(1, 16_777_216, 4096, "img", max_aspect_ratio=8)


def test_check_latents_channel_count():
    with pytest.raises(ValueError, match="3 channels but this VAE expects 4"):
        codecs.check_latents(torch.randn(1, 3, 8, 8), channels=4)


def test_safetensors_with_two_tensors_or_bad_header_is_refused():
    from safetensors.torch import save

    two = save({"a": torch.zeros(1, 4, 2, 2), "b": torch.zeros(1, 4, 2, 2)})
    with pytest.raises(ValueError, match="exactly one tensor"):
        codecs.decode_latents(two)
    bad = struct.pack("<Q", 5) + b"{bad}"
    with pytest.raises(ValueError, match="not a valid safetensors"):
        codecs.decode_latents(bad)

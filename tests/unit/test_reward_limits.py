"""The reward service's request limits (reward_service/limits.py), checked before their work."""

from __future__ import annotations

import base64
import io
import time

import pytest
import torch
from PIL import Image

from reward_service.config import ServeConfig
from reward_service.limits import (
    Limits,
    check_image_batch,
    check_json_depth,
    check_latent_request,
    check_prompts,
    decode_images,
    echo,
)
from rglcd.codecs import PayloadTooLargeError

LIMITS = Limits(max_image_pixels=64 * 64, max_request_pixels=4 * 64 * 64, max_aspect_ratio=8,
                max_prompt_chars=100, max_items=16)
VAE = {"latent_channels": 4, "upsampling": 4, "scaling_factor": 0.5, "max_latent_side": 16}


def _png(width: int, height: int, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_are_grouped_by_size_in_request_order():
    groups = decode_images([_png(8, 8), _png(16, 8), _png(8, 8)], LIMITS)
    assert [(idx, tuple(x.shape)) for idx, x in groups] == [
        ([0, 2], (2, 3, 8, 8)), ([1], (1, 3, 8, 16))
    ]
    assert groups[0][1].dtype == torch.uint8


def test_summed_pixels_are_refused_from_the_headers_before_decoding(monkeypatch):
    from rglcd import codecs

    decoded = []
    monkeypatch.setattr(codecs, "decode_opened_image", lambda *a: decoded.append(a))
    with pytest.raises(PayloadTooLargeError, match="20480 pixels together, above the limit of 16384"):
        decode_images([_png(64, 64)] * 5, LIMITS)  # each image is within its own limit
    assert decoded == []


def test_one_bit_bombs_and_thin_images_are_refused_on_the_header():
    bomb = _png(4096, 4096, mode="1")  # a few KB of PNG, 16.7 M pixels
    assert len(bomb) < 10_000
    with pytest.raises(PayloadTooLargeError, match=r"images\[1\] is 4096x4096"):
        decode_images([_png(8, 8), bomb], LIMITS)
    with pytest.raises(ValueError, match=r"images\[0\] is 512x4, an aspect ratio of 128.0"):
        decode_images([_png(512, 4)], LIMITS)


def test_prompts_and_echoes_are_bounded():
    check_prompts(["x" * 100], LIMITS)
    with pytest.raises(PayloadTooLargeError, match=r"prompts\[1\] has 101 characters"):
        check_prompts(["ok", "x" * 101], LIMITS)
    long = echo("<object at 0x7f3a2b4c5d60> " + "y" * 10_000)
    assert "0x7f" not in long and len(long) < 300 and long.endswith("more characters]")


def test_latent_requests_are_bounded_by_the_vaes_trained_size():
    check_latent_request((4, 4, 16, 16), VAE, LIMITS, "toy")
    with pytest.raises(ValueError, match=r"expects \[N, 4, H, W\]"):
        check_latent_request((1, 3, 8, 8), VAE, LIMITS, "toy")
    with pytest.raises(PayloadTooLargeError, match="larger than vae 'toy' decodes"):
        check_latent_request((1, 4, 256, 256), VAE, LIMITS, "toy")
    with pytest.raises(PayloadTooLargeError, match="decoded latents have 20480 pixels"):
        check_latent_request((5, 4, 16, 16), VAE, LIMITS, "toy")
    with pytest.raises(ValueError, match="aspect ratio of 16.0"):
        check_latent_request((1, 4, 1, 16), VAE, LIMITS, "toy")


def test_replicas_check_tensors_that_bypass_http():
    check_image_batch(torch.zeros(4, 3, 64, 64), LIMITS)
    with pytest.raises(PayloadTooLargeError):
        check_image_batch(torch.zeros(5, 3, 64, 64, dtype=torch.uint8), LIMITS)
    with pytest.raises(ValueError, match="aspect ratio"):
        check_image_batch(torch.zeros(1, 3, 1, 300), LIMITS)


def test_service_config_refuses_a_request_limit_below_one_image():
    limits = Limits.from_config(ServeConfig())
    assert limits.max_request_pixels >= limits.max_image_pixels
    with pytest.raises(ValueError, match="max_request_pixels"):
        ServeConfig(max_image_pixels=100, max_request_pixels=99)


def test_non_finite_or_out_of_range_images_are_per_item_problems():
    from reward_service.deployments import item_problems

    images = torch.rand(4, 3, 8, 8)
    images[1, 0, 0, 0] = float("nan")
    images[2, 1, 2, 3] = 1.5
    problems = item_problems(images)
    assert problems[0] is None and problems[3] is None
    assert "NaN or infinite" in problems[1] and "range [" in problems[2]
    assert item_problems(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)) == [None, None]
    with pytest.raises(ValueError, match="uint8 or float"):
        item_problems(torch.zeros(1, 3, 8, 8, dtype=torch.int32))


def test_scorer_calls_are_cut_by_pixels_without_splitting_a_job():
    from reward_service.deployments import _pixel_chunks

    jobs = [(torch.zeros(n, 3, 8, 8), ["p"] * n) for n in (2, 3, 1, 4)]
    assert _pixel_chunks([0, 1, 2, 3], jobs, 5 * 64) == [[0, 1], [2, 3]]
    assert _pixel_chunks([0, 1, 2, 3], jobs, 64) == [[0], [1], [2], [3]]


def test_scorer_preprocessing_refuses_extreme_aspect_ratios():
    from reward_service.scorers.preprocess import PreprocessRecipe, preprocess

    with pytest.raises(ValueError, match="aspect ratio above 64"):
        preprocess(torch.rand(1, 3, 1, 65), PreprocessRecipe(size=16))
    assert preprocess(torch.rand(1, 3, 4, 32), PreprocessRecipe(size=16)).shape == (1, 3, 16, 16)


def test_vae_decoder_bounds_latent_sides_and_stops_at_its_deadline():
    from reward_service.latents import LatentDecoder
    from rglcd.tiny_models import tiny_vae

    decoder = LatentDecoder(tiny_vae(), max_size_factor=2.0)
    side = decoder.max_latent_side  # twice the VAE's trained latent side
    assert side == 2 * decoder.vae.config.sample_size // decoder.upsampling
    assert decoder.info()["max_latent_side"] == side
    assert decoder.decode(torch.zeros(1, 4, side, side)).shape[-1] == side * decoder.upsampling
    with pytest.raises(ValueError, match="larger than this VAE decodes"):
        decoder.decode(torch.zeros(1, 4, side + 1, side))
    with pytest.raises(TimeoutError, match="deadline"):
        decoder.decode(torch.zeros(1, 4, 8, 8), deadline=time.time() - 1.0)


def _nested(depth: int, inner: bytes = b"[]") -> bytes:
    return b'{"model": "m", "prompts": ' + b"[" * depth + inner + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [40, 5000, 200_000])
def test_deeply_nested_json_is_refused_without_recursion(depth):
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        check_json_depth(_nested(depth))


def test_brackets_inside_strings_and_valid_requests_pass_the_depth_check():
    check_json_depth(_nested(1, b'"' + b"[" * 1000 + b'\\"{{"'))
    check_json_depth(b'{"latents": {"data": "x", "vae": "toy"}, "prompts": ["a [b]"]}')
    check_json_depth(b"[" * 32 + b"]" * 32)
    check_json_depth(b"")
    with pytest.raises(ValueError):
        check_json_depth(b"[" * 33 + b"]" * 33)

"""What one request may cost the service, checked before the cost is paid (plain code, no Ray).

The HTTP ingress (reward_service/app.py) runs these checks in this order, each before the
work it guards: item count and prompt length on the parsed body; image sizes and aspect
ratios on the PNG/JPEG *headers* of every image of the request, then their summed pixels,
all before a single pixel is decoded; latent sides against the VAE's trained size before
decoding. Scorer replicas repeat the per-image and per-call checks on what reaches them
through deployment handles (reward_service/deployments.py), so the trainer's path is bound too.

Before any of them the body's nesting depth is measured without recursion (a JSON body nested
thousands of levels deep would exhaust the parser's stack).

`PayloadTooLargeError` means HTTP 413, any other `ValueError` 422.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from rglcd import codecs
from rglcd.codecs import PayloadTooLargeError

MAX_ECHO_CHARS = 200  # user text quoted back in an error message is cut to this
_HEAP_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# A score request nests 3 levels ({"latents": {...}}); far below Python's recursion limit.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # brackets inside strings do not nest
_DEPTH_CHUNK = 1 << 20
_NESTING_STEP = np.zeros(256, dtype=np.int32)  # byte -> +1 opens, -1 closes an array/object
_NESTING_STEP[[ord("["), ord("{")]] = 1
_NESTING_STEP[[ord("]"), ord("}")]] = -1


@dataclass(frozen=True)
class Limits:
    """The request limits of `ServeConfig` that the ingress and the replicas share."""

    max_image_pixels: int
    max_request_pixels: int
    max_aspect_ratio: float
    max_prompt_chars: int
    max_items: int

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(
            max_image_pixels=config.max_image_pixels,
            max_request_pixels=config.max_request_pixels,
            max_aspect_ratio=config.max_aspect_ratio,
            max_prompt_chars=config.max_prompt_chars,
            max_items=config.max_items_per_request,
        )


def echo(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """User text for an error message: cut to `limit` characters, heap addresses removed."""
    text = _HEAP_ADDRESS.sub("", str(text))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def check_json_depth(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError when arrays/objects in a JSON body nest deeper than `max_depth`.

    A linear scan (strings removed, then a running sum of openers minus closers), so a body
    nested thousands of levels deep is refused before a recursive parser sees it.
    """
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    depth = 0
    for start in range(0, len(skeleton), _DEPTH_CHUNK):  # bounded memory for a large body
        chunk = skeleton[start:start + _DEPTH_CHUNK]
        running = depth + np.cumsum(_NESTING_STEP[chunk])
        if len(running) and int(running.max()) > max_depth:
            raise ValueError(
                f"invalid request body: JSON nested deeper than {max_depth} levels; a score "
                "request needs 3 (send the documented shape)"
            )
        depth = int(running[-1]) if len(running) else depth


def check_items(count: int, limits: Limits) -> None:
    if count > limits.max_items:
        raise PayloadTooLargeError(
            f"request has {count} items, above the limit of {limits.max_items}; split it"
        )


def check_prompts(prompts: list[str], limits: Limits) -> None:
    for i, prompt in enumerate(prompts):
        if len(prompt) > limits.max_prompt_chars:
            raise PayloadTooLargeError(
                f"prompts[{i}] has {len(prompt)} characters, above the limit of "
                f"{limits.max_prompt_chars}; shorten it"
            )


def check_total_pixels(pixels: int, limits: Limits, what: str = "the request's images") -> None:
    if pixels > limits.max_request_pixels:
        raise PayloadTooLargeError(
            f"{what} have {pixels} pixels together, above the limit of "
            f"{limits.max_request_pixels} per request; send fewer or smaller images per request"
        )


def decode_images(images_b64: list[str], limits: Limits) -> list[tuple[list[int], torch.Tensor]]:
    """base64 PNG/JPEG -> groups of equal-size (n, 3, H, W) uint8 batches with their indices.

    Every header is read and checked, and the pixels summed, before any image is decoded.
    """
    opened, total = [], 0
    for i, data in enumerate(images_b64):
        what = f"images[{i}]"
        image = codecs.open_image(codecs.b64decode(data, what), what)
        codecs.check_image_size(*image.size, limits.max_image_pixels, what, limits.max_aspect_ratio)
        total += image.size[0] * image.size[1]
        opened.append(image)
    check_total_pixels(total, limits)
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, image in enumerate(opened):
        decoded = codecs.decode_opened_image(image, f"images[{i}]")
        groups.setdefault(tuple(decoded.shape), []).append((i, decoded))
    return [([i for i, _ in group], torch.stack([x for _, x in group])) for group in groups.values()]


def check_latent_request(shape: tuple[int, ...], vae: dict, limits: Limits, name: str) -> None:
    """Latents (N, C, h, w) for the VAE described by `vae` (VaeDeployment.info) fit the limits."""
    if shape[1] != vae["latent_channels"]:
        raise ValueError(
            f"latents have shape {list(shape)} but vae {name!r} expects "
            f"[N, {vae['latent_channels']}, H, W]"
        )
    side = vae["max_latent_side"]
    if max(shape[2:]) > side:
        raise PayloadTooLargeError(
            f"latents of {shape[2]}x{shape[3]} are larger than vae {name!r} decodes (sides up "
            f"to {side}, i.e. images up to {side * vae['upsampling']} pixels a side)"
        )
    pixels = shape[2] * shape[3] * vae["upsampling"] ** 2
    codecs.check_image_size(
        shape[3] * vae["upsampling"], shape[2] * vae["upsampling"], limits.max_image_pixels,
        "each decoded latent", limits.max_aspect_ratio,
    )
    check_total_pixels(pixels * shape[0], limits, "the decoded latents")


def check_image_batch(images: torch.Tensor, limits: Limits) -> None:
    """A replica's own check of what reached it (N, 3, H, W): one image's size and ratio and
    the request's total pixels, before any conversion or resize."""
    height, width = images.shape[-2:]
    codecs.check_image_size(width, height, limits.max_image_pixels, "each image",
                            limits.max_aspect_ratio)
    check_total_pixels(len(images) * height * width, limits)

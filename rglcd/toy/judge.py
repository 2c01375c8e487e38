"""The toy judge: a non-differentiable, VIEScore-style expert for toy scenes.

VIEScore (docs/method.md §5) asks a VLM for a semantic-consistency score SC and perceptual
quality scores PQ (0-10 each) and reports ``O = sqrt(SC * PQ)``. Here the "VLM" is a fixed
procedure on a uint8 copy of the image, built from deliberately non-differentiable steps:

1. quantise every pixel to the nearest palette colour (argmin), keep its distance;
2. background = most frequent class on the border; object = the largest 4-connected component
   (label propagation) of non-background pixels;
3. object colour = majority class in it; size = small if its bounding box is <= 15 px wide;
   shape = the renderer's template (circle / square / triangle / cross) with the highest IoU;
4. SC = 10 x fraction of (colour, shape, size, background) that match the prompt;
   PQ = min(flat fills, clean edges, colour purity) where flat fills falls with the mean
   distance of pixels to their palette colour (noise), clean edges with the share of object
   pixels outside the main component (speckle), purity with mixed colours inside the object.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from rglcd.toy.scenes import (
    COLOUR_NAMES,
    PALETTE,
    SHAPES,
    SIZE_THRESHOLD,
    parse_caption,
    shape_mask,
)

ATTRIBUTES = ("colour", "shape", "size", "bg")
FLAT_DEV_OK, FLAT_DEV_BAD = 6.0, 40.0  # mean RGB distance to the palette (0-255 units)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> detached (N, H, W, 3) uint8 copy: no autograd path survives."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB in [0, 1], got shape {tuple(images.shape)}.")
    pixels = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def connected_components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels of boolean masks (..., H, W) by min-label propagation; -1 off the mask.

    Labels are flat pixel indices within each image; all images propagate together (one
    numpy pass per iteration over the whole batch), each until its own fixed point.
    """
    *lead, h, w = mask.shape
    big = h * w
    index = np.broadcast_to(np.arange(big).reshape(h, w), mask.shape)
    padded = np.full((*lead, h + 2, w + 2), big, dtype=np.int64)
    inner = padded[..., 1:-1, 1:-1]
    inner[...] = np.where(mask, index, big)
    while True:
        neighbours = np.minimum.reduce([inner, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                                        padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
        updated = np.where(mask, neighbours, big)
        if np.array_equal(updated, inner):
            return np.where(mask, inner, -1)
        inner[...] = updated


@functools.lru_cache(maxsize=4096)
def _templates(width: int, cx: float, cy: float, size: int) -> np.ndarray:
    """(len(SHAPES) * 3, size, size) masks: every shape at widths width-1, width, width+1."""
    masks = np.stack([shape_mask(shape, w, cx, cy, size=size)
                      for shape in SHAPES for w in (width - 1, width, width + 1)])
    masks.flags.writeable = False  # shared by every caller through the cache
    return masks


def object_place(obj: np.ndarray) -> tuple[float, float, int]:
    """(x, y, width) of a non-empty boolean object mask: bounding-box centre, larger side."""
    ys, xs = np.nonzero(obj)
    width = int(max(xs.max() - xs.min(), ys.max() - ys.min())) + 1
    return (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, width


def _classify_shape(obj: np.ndarray) -> tuple[str, int]:
    """Best-IoU shape template for a boolean object mask; returns (shape, bbox width)."""
    cx, cy, width = object_place(obj)
    templates = _templates(width, float(cx), float(cy), obj.shape[0])
    iou = (templates & obj).sum((1, 2)) / np.maximum((templates | obj).sum((1, 2)), 1)
    return SHAPES[int(iou.argmax()) // 3], width  # argmax: first best, as a strict > scan


def _quality(deviation: np.ndarray, stray: float, purity: float) -> dict[str, float]:
    flat = 10 * np.clip(1 - (deviation.mean() - FLAT_DEV_OK) / (FLAT_DEV_BAD - FLAT_DEV_OK), 0, 1)
    clean = 10 * np.clip(1 - 2 * stray, 0, 1)
    pure = 10 * np.clip((purity - 0.5) / 0.45, 0, 1)
    return {"flat_fills": float(flat), "clean_edges": float(clean), "colour_purity": float(pure)}


def palette_and_background(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(N, H, W, 3) uint8 -> nearest palette class and distance to it of every pixel, and each
    image's background class (the most frequent class on its border; ties: lowest class)."""
    distance = np.linalg.norm(images[..., None, :].astype(np.float32) - PALETTE.astype(np.float32),
                              axis=-1)  # (N, H, W, 8)
    classes, deviation = distance.argmin(-1), distance.min(-1)
    border = np.concatenate([classes[:, 0], classes[:, -1], classes[:, :, 0], classes[:, :, -1]],
                            axis=1)  # (N, 4 * side)
    bgs = [int(np.bincount(row, minlength=len(PALETTE)).argmax()) for row in border]
    return classes, deviation, bgs


def analyse_images(images: np.ndarray) -> list[dict]:
    """Detected attributes and quality sub-scores of each (H, W, 3) uint8 image of (N, H, W, 3).

    The per-pixel steps (palette argmin, border vote, connected components) run on the whole
    batch at once; the per-object steps run image by image.
    """
    classes, deviation, bgs = palette_and_background(images)
    labels = connected_components(classes != np.array(bgs)[:, None, None])
    parts = zip(classes, deviation, labels, bgs, strict=True)
    return [_analyse_one(c, d, lab, bg) for c, d, lab, bg in parts]


def _analyse_one(classes: np.ndarray, deviation: np.ndarray, labels: np.ndarray, bg: int) -> dict:
    detected = {"bg": COLOUR_NAMES[bg], "colour": None, "shape": None, "size": None}
    if (labels < 0).all():
        return {"detected": detected, **_quality(deviation, stray=0.0, purity=1.0)}
    counts = np.bincount(labels[labels >= 0])
    obj = labels == counts.argmax()
    obj_classes = np.bincount(classes[obj], minlength=len(PALETTE))
    shape, width = _classify_shape(obj)
    detected.update(colour=COLOUR_NAMES[int(obj_classes.argmax())], shape=shape,
                    size="small" if width <= SIZE_THRESHOLD else "large")
    stray = 1 - obj.sum() / (labels >= 0).sum()
    purity = obj_classes.max() / obj.sum()
    return {"detected": detected, **_quality(deviation, stray, purity)}


class ToyJudge:
    """VIEScore-style expert: (images, prompts) -> per-item sub-scores, each 0-10, no gradient."""

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[dict]:
        """Per item: semantic, quality, overall, the sub-scores, `detected` and `correct`."""
        if len(prompts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one each.")
        wanted = [parse_caption(p) for p in prompts]
        results = []
        for item, want in zip(analyse_images(to_uint8_images(images)), wanted, strict=True):
            correct = {a: item["detected"][a] == want[a] for a in ATTRIBUTES}
            semantic = 10 * sum(correct.values()) / len(ATTRIBUTES)
            quality = min(item["flat_fills"], item["clean_edges"], item["colour_purity"])
            item.update(correct=correct, semantic=semantic, quality=quality,
                        overall=float(np.sqrt(semantic * quality)))
            results.append(item)
        return results

    def scores(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N,) overall scores as a plain float tensor (no grad_fn, requires_grad False)."""
        return torch.tensor([r["overall"] for r in self.judge(images, prompts)])

    def summary(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """Accuracy of each attribute and the mean sub-scores and scores over a batch."""
        return summarise(self.judge(images, prompts))


def summarise(results: list[dict]) -> dict[str, float]:
    """`ToyJudge.summary` of results already judged."""
    out = {f"{a}_accuracy": float(np.mean([r["correct"][a] for r in results]))
           for a in ATTRIBUTES}
    for key in ("flat_fills", "clean_edges", "colour_purity", "semantic", "quality", "overall"):
        out[key] = float(np.mean([r[key] for r in results]))
    return {k: round(v, 4) for k, v in out.items()}

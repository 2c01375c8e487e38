"""A held-out judge for toy scenes: independent rules, for evaluations only.

Why a second judge: the default recipe learns from the toy judge (through the LRM), so the toy
judge's verdict on its samples is the verdict of the reward it optimised. The paper trains on
one reward and reports others and people (paper section 5); on the toy world this judge is the
"other" reward. It shares no rule with `rglcd.toy.judge`: no palette argmin, no connected
components, no shape templates. Every rule reads the pixels a different way:

1. background colour = the per-channel median of the image's one-pixel frame;
2. foreground = pixels farther than `FOREGROUND_DISTANCE` (RGB) from it both in the image and
   in its 3x3 median-filtered copy, minus isolated pixels (fewer than `MIN_NEIGHBOURS`
   foreground neighbours of 8);
3. colour of a pixel by hue: low saturation or low value reads white / black, otherwise the
   nearest hue centre; object colour = the mode of the foreground's hue histogram;
4. shape by image moments of the foreground: fill ratio (area / bounding-box area) and how far
   the centroid sits below the box centre (an upright triangle carries its mass low);
5. size by area: the width a shape of the detected kind with that area would have, read at
   32 px (so any image size works), small when <= 15 px;
6. cleanliness = share of pixels within `CLEAN_DISTANCE` of the background or object colour.

overall = 10 * (0.8 * share of (colour, shape, size, background) that match the caption
+ 0.2 * cleanliness), in [0, 10].
"""

from __future__ import annotations

import numpy as np
import torch

from rglcd.toy.judge import to_uint8_images
from rglcd.toy.scenes import COLOURS, IMAGE_SIZE, SIZE_THRESHOLD, parse_caption

FOREGROUND_DISTANCE = 60.0  # RGB units; the closest two scene colours are ~81 apart
MIN_NEIGHBOURS = 2
CLEAN_DISTANCE = 30.0
ACHROMATIC_SATURATION = 0.4
DARK_VALUE = 0.25
TRIANGLE_OFFSET = 0.07  # centroid below the box centre, in box heights (ideal: 1/6)
SQUARE_FILL, CIRCLE_FILL = 0.93, 0.67  # fill ratio cut points (ideal: 1, pi/4, 5/9, 1/2)
SHAPE_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}
SEMANTIC_WEIGHT = 0.8
ATTRIBUTES = ("colour", "shape", "size", "bg")


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 or float in [0, 255] -> (..., 3) float: hue in degrees, saturation, value."""
    rgb = np.asarray(rgb, dtype=np.float64) / 255.0
    high, low = rgb.max(-1), rgb.min(-1)
    chroma = high - low
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(high == r, ((g - b) / safe) % 6,
                   np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    hue = np.where(chroma > 0, hue, 0.0)
    saturation = np.where(high > 0, chroma / np.where(high > 0, high, 1.0), 0.0)
    return np.stack([hue, saturation, high], axis=-1)


def _hue_centres() -> dict[str, float]:
    """Hue in degrees of each chromatic scene colour (white and black have none)."""
    out = {}
    for name, rgb in COLOURS.items():
        hue, saturation, _ = rgb_to_hsv(np.array(rgb))
        if saturation >= ACHROMATIC_SATURATION:
            out[name] = float(hue)
    return out


HUE_CENTRES = _hue_centres()
_HUE_NAMES = tuple(HUE_CENTRES)
_NAMES = (*_HUE_NAMES, "white", "black")


def colour_classes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) pixels -> (...,) index into `_NAMES` by hue / saturation / value."""
    hsv = rgb_to_hsv(rgb)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    centres = np.array([HUE_CENTRES[n] for n in _HUE_NAMES])
    gap = np.abs(hue[..., None] - centres)
    nearest = np.minimum(gap, 360 - gap).argmin(-1)  # circular hue distance
    white, black = len(_HUE_NAMES), len(_HUE_NAMES) + 1
    achromatic = np.where(value >= 0.5, white, black)
    grey = saturation < ACHROMATIC_SATURATION
    return np.where(value < DARK_VALUE, black, np.where(grey, achromatic, nearest))


def colour_name(rgb: np.ndarray) -> str:
    """Scene colour name of one RGB triple."""
    return _NAMES[int(colour_classes(np.asarray(rgb)))]


def median_filter(image: np.ndarray) -> np.ndarray:
    """3x3 per-channel median (edge pixels repeat): removes pixel noise, keeps flat regions."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    stack = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.median(np.stack(stack), axis=0)


def foreground_mask(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W) bool: far from the background colour and not an isolated speck."""
    # far in the image and in its median-filtered copy: noise specks fail the second test,
    # and the filter's rounding of corners fails the first
    far = np.stack([np.linalg.norm(x - background, axis=-1) > FOREGROUND_DISTANCE
                    for x in (image.astype(np.float64), median_filter(image))]).all(0)
    padded = np.pad(far, 1).astype(np.int32)
    h, w = far.shape
    neighbours = sum(padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return far & (neighbours >= MIN_NEIGHBOURS)


def shape_moments(mask: np.ndarray) -> dict[str, float]:
    """Area, fill ratio, centroid and the centroid's drop below the box centre of a mask."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    height, width = bottom - top, right - left
    centroid_y, centroid_x = ys.mean() + 0.5, xs.mean() + 0.5  # pixel centres
    return {
        "area": float(ys.size),
        "fill": float(ys.size / (height * width)),
        "drop": float((centroid_y - (top + bottom) / 2) / height),
        "x": float(centroid_x),
        "y": float(centroid_y),
    }


def classify_shape(moments: dict[str, float]) -> str:
    """Shape from the fill ratio and the centroid's drop (see the module docstring)."""
    if moments["drop"] > TRIANGLE_OFFSET:
        return "triangle"
    if moments["fill"] >= SQUARE_FILL:
        return "square"
    return "circle" if moments["fill"] >= CIRCLE_FILL else "cross"


def size_from_area(area: float, shape: str, side: int) -> str:
    """small / large from the width a `shape` of `area` pixels has, read at 32 px."""
    area_at_32 = area * (IMAGE_SIZE / side) ** 2
    width = np.sqrt(area_at_32 / SHAPE_FILL[shape])
    return "small" if width <= SIZE_THRESHOLD + 0.5 else "large"


def read_scene(image: np.ndarray) -> dict:
    """What one (H, W, 3) uint8 image shows: detected attributes, centroid and cleanliness."""
    frame = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    background = np.median(frame.astype(np.float64), axis=0)
    detected = {"bg": colour_name(background), "colour": None, "shape": None, "size": None}
    mask = foreground_mask(image, background)
    if not mask.any():
        return {"detected": detected, "centroid": None, "cleanliness": _clean(image, background)}
    counts = np.bincount(colour_classes(image[mask]).ravel(), minlength=len(_NAMES))
    moments = shape_moments(mask)
    shape = classify_shape(moments)
    detected.update(colour=_NAMES[int(counts.argmax())], shape=shape,
                    size=size_from_area(moments["area"], shape, image.shape[0]))
    obj = np.median(image[mask].astype(np.float64), axis=0)
    return {"detected": detected, "centroid": (moments["x"], moments["y"]),
            "cleanliness": _clean(image, background, obj)}


def _clean(image: np.ndarray, *colours: np.ndarray) -> float:
    pixels = image.astype(np.float64)
    near = np.stack([np.linalg.norm(pixels - c, axis=-1) <= CLEAN_DISTANCE for c in colours])
    return float(near.any(0).mean())


class HeldoutJudge:
    """(images, prompts) -> per-item verdicts, 0-10, no gradient; same calls as `ToyJudge`."""

    def judge(self, images: torch.Tensor, prompts: list[str]) -> list[dict]:
        """Per item: `detected`, `correct`, `semantic`, `cleanliness`, `overall`."""
        if len(prompts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one each.")
        wanted = [parse_caption(p) for p in prompts]
        results = []
        for image, want in zip(to_uint8_images(images), wanted, strict=True):
            item = read_scene(image)
            correct = {a: item["detected"][a] == want[a] for a in ATTRIBUTES}
            semantic = sum(correct.values()) / len(ATTRIBUTES)
            overall = 10 * (SEMANTIC_WEIGHT * semantic + (1 - SEMANTIC_WEIGHT) * item["cleanliness"])
            item.update(correct=correct, semantic=10 * semantic, overall=float(overall))
            results.append(item)
        return results

    def scores(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N,) overall scores as a plain float tensor."""
        return torch.tensor([r["overall"] for r in self.judge(images, prompts)])

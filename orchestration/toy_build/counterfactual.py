"""Counterfactual re-renders of clean toy scenes: the same scene with one captioned attribute
changed (shape, size or colour). With the degraded copies of `degrade.py` they are the hard
negative images of stage reward-clip's "hard-negatives" objective: for its caption, the true
picture must outscore each of them, which shapes how the CLIP score varies over pictures for
a fixed caption, the direction a direct reward's gradient follows (paper eq. 10-11).

The scene's position and width are read back from the clean render (bounding box of the
object mask, as the toy judge measures it), so the re-render keeps everything the caption
does not name.
"""

from __future__ import annotations

import numpy as np
import torch

from orchestration.toy_build.degrade import object_masks
from rglcd.toy.judge import object_place
from rglcd.toy.scenes import COLOURS, SHAPES, SIZE_RANGES, Scene, in_frame, parse_caption, render

ATTRIBUTES = ("shape", "size", "colour")


def _swap(attribute: str, want: dict[str, str], place: tuple[float, float, int],
          rng: np.random.Generator) -> np.ndarray:
    x, y, width = place
    shape, colour = want["shape"], want["colour"]
    if attribute == "shape":
        shape = str(rng.choice([s for s in SHAPES if s != shape]))
    elif attribute == "colour":
        colour = str(rng.choice([c for c in COLOURS if c not in (colour, want["bg"])]))
    else:  # the other size's width range, centre moved just enough to stay in frame
        lo, hi = SIZE_RANGES["large" if want["size"] == "small" else "small"]
        width = int(rng.integers(lo, hi + 1))
        x, y = in_frame(x, y, width)
    scene = Scene(want["size"], colour, shape, want["bg"], width, x, y)  # size: width draws it
    return render(scene).astype(np.float32) / 255


def counterfactuals(images: torch.Tensor, captions: list[str], seed: int) -> torch.Tensor:
    """(len(ATTRIBUTES), N, 3, H, W): each clean scene with its shape, size, colour changed."""
    if len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; pass one each")
    rng = np.random.default_rng(seed)
    scenes = [(parse_caption(c), object_place(m))
              for m, c in zip(object_masks(images).numpy(), captions, strict=True)]
    out = np.stack([np.stack([_swap(a, want, place, rng) for want, place in scenes])
                    for a in ATTRIBUTES])
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3)

"""One evaluation worker's job (no Ray here; ray_tasks.py makes it an actor, one per GPU).

A worker loads each pipeline once (generation.load_pipeline keeps it) and the FID feature
network once, then takes chunks: it generates a chunk's images, writes them to the run's
storage at once (items.image_name), and returns them with their FID features,
high-frequency fractions and flat-region noise (accumulate.ImageFigures). The driver scores
the chunk, folds its figures into the row's accumulators and drops the images.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch

from orchestration.evaluation.accumulate import ImageFigures
from orchestration.evaluation.config import EvalConfig, ModelSpec
from orchestration.evaluation.generation import generate, load_pipeline
from orchestration.evaluation.image_metrics import (
    feature_network,
    flat_noise,
    hf_fractions,
    read_reference,
)
from orchestration.evaluation.items import Item, image_name
from rglcd import storage


@dataclass
class Chunk:
    """What a worker returns for a chunk of one row (or of the reference set)."""

    row: str | None  # None: reference images
    items: list[Item]
    images: np.ndarray | None  # (B, H, W, 3) uint8; None for the reference set
    figures: ImageFigures
    seconds: float = 0.0  # sampling time of the chunk


class EvalWorker:
    def __init__(self, cfg: dict, reference_size: tuple[int, int] | None, device: str,
                 threads: int) -> None:
        torch.set_num_threads(threads)  # oversubscribed CPUs slow down badly with more threads
        self.cfg = EvalConfig.model_validate(cfg)
        self.device = device
        self.size = reference_size  # (W, H) the HF fractions are computed at
        self.features = feature_network(self.cfg.fid) if self.cfg.fid.enabled and \
            reference_size is not None else None

    def _figures(self, images: np.ndarray) -> ImageFigures:
        figures = ImageFigures()
        with torch.no_grad():
            if self.features is not None:
                figures.features = self.features(images).double().cpu()
            if self.size is not None and self.cfg.hf_noise.enabled:
                figures.hf = hf_fractions(images, self.size, self.cfg.hf_noise.cutoff)
            if self.cfg.flat_noise.enabled:
                figures.flat = flat_noise(images)  # at the images' own resolution
        return figures

    def generate(self, spec: dict, steps: int, row: str, items: list[Item]) -> Chunk:
        model = ModelSpec.model_validate(spec)
        pipe = load_pipeline(model, self.device)
        start = time.perf_counter()
        images = generate(pipe, model, steps, [i.prompt for i in items],
                          [i.noise_seed for i in items])
        seconds = time.perf_counter() - start
        if self.cfg.output.save_images:
            self._save(row, items, images)
        return Chunk(row, items, images, self._figures(images), seconds)

    def reference(self, start: int, stop: int) -> Chunk:
        images = read_reference(self.cfg.reference, start, stop, self.size)
        return Chunk(None, [], None, self._figures(images))

    def _save(self, row: str, items: list[Item], images: np.ndarray) -> None:
        from PIL import Image

        fmt = self.cfg.output.image_format
        for item, image in zip(items, images, strict=True):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG" if fmt == "jpg" else "PNG",
                                        **({"quality": 95} if fmt == "jpg" else {}))
            storage.write_bytes(storage.join(self.cfg.output.dir, image_name(row, item, fmt)),
                                buffer.getvalue())

"""Shared test data builders (plain functions; no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rglcd.codecs import encode_latents
from rglcd.toy.data import ensure_toy_dataset, read_toy_table


def toy_latent_shards(directory: Path, teacher: Path, n: int, resolution: int = 16) -> Path:
    """Pre-encoded latent shards (latent, caption) of `n` toy scenes, written in-process.

    The trainer reads latent shards without the VAE-encoding Ray Data stage; tests that are
    about resume, DDP or the LRM use them to skip that stage's actor start-up, and the e2e
    tests keep exercising the image path. Encoding is trainer.data.EncodeImages, in-process.
    """
    from trainer.data import EncodeImages

    images = directory.parent / f"{directory.name}-images"
    ensure_toy_dataset(images, "train", n, seed=0)
    table = read_toy_table(images, "train")
    batch = {"image": np.array(table.column("image").to_pylist(), dtype=object),
             "caption": np.array(table.column("caption").to_pylist(), dtype=object)}
    encoded = EncodeImages(str(teacher), resolution, seed=0)(batch)
    directory.mkdir(parents=True, exist_ok=True)
    rows = {"latent": [encode_latents(lat[None]) for lat in _tensors(encoded["latents"])],
            "caption": [str(c) for c in encoded["caption"]]}
    pq.write_table(pa.table(rows), directory / "train-00000.parquet")
    return directory


def _tensors(latents: np.ndarray):
    import torch

    return [torch.from_numpy(np.ascontiguousarray(row)) for row in latents]


def tiny_clip_dir(path: Path) -> Path:
    """A tiny transformers CLIPModel + tokenizer folder (the LRM's text tower comes from it)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from rglcd.tiny_models import tiny_text_encoder, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    text = tiny_text_encoder(len(tokenizer)).config.to_dict()
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
              "num_attention_heads": 4, "image_size": 16, "patch_size": 8}
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


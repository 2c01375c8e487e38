"""LRM pretraining data from the latent Parquet shards of orchestration/commands/data_job.py.

A shard row holds `latent` (safetensors bytes of one (1, C, h, w) latent, already times the
VAE's scaling factor: the z0 of RG-LCD) and `caption`; the folder's `manifest.json` records
the scaling factor and latent shape. Nothing is VAE-encoded here. The last shard(s), in name
order, are held out for zero-shot retrieval; the others are split between the workers by
shard, so each rank reads only its files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import torch

from rglcd.codecs import decode_latents
from trainer.lrm.pretrain import LatentCaptionData

MANIFEST = "manifest.json"


def read_manifest(folder: str | Path) -> dict:
    """data_job's manifest.json (scaling_factor, latent_shape, shards), ValueError if absent."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{folder} has no {MANIFEST}: point data.latents at the output folder of "
            "rglcd-data-job (orchestration/commands/data_job.py)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not manifest.get("shards") or manifest.get("latent_shape") is None:
        raise ValueError(f"{path} lists no shards (num_written={manifest.get('num_written')})")
    return manifest


def split_shards(folder: str | Path, heldout: int) -> tuple[list[Path], list[Path]]:
    """(training shard files, held-out shard files): the last `heldout` shards in name order."""
    files = [Path(folder) / s["file"] for s in read_manifest(folder)["shards"]]
    if heldout < 1 or len(files) <= heldout:
        raise ValueError(
            f"{folder} has {len(files)} latent shard(s); holding out {heldout} for retrieval "
            "needs more: write smaller shards (rglcd-data-job rows_per_shard=...) or lower "
            "data.heldout_shards"
        )
    return files[:-heldout], files[-heldout:]


def read_latent_captions(files: list[Path], max_rows: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """(N, C, h, w) float16 latents and their N captions from the shard files, in order."""
    latents, captions = [], []
    for file in files:
        table = pq.read_table(file, columns=["latent", "caption"])
        latents += [decode_latents(raw) for raw in table.column("latent").to_pylist()]
        captions += [str(c) for c in table.column("caption").to_pylist()]
        if max_rows is not None and len(captions) >= max_rows:
            break
    if not captions:
        raise ValueError(f"the latent shards {[f.name for f in files]} hold no rows")
    latents, captions = latents[:max_rows], captions[:max_rows]
    return torch.cat(latents).to(torch.float16), captions  # each decoded latent is (1, C, h, w)


def latent_split(files: list[Path], tokenizer, max_rows: int | None = None) -> LatentCaptionData:
    """A split for `contrastive_step` / `evaluate_retrieval`, ranked against its own captions."""
    latents, captions = read_latent_captions(files, max_rows)
    distinct = sorted(set(captions))
    row = {caption: i for i, caption in enumerate(distinct)}
    tokens = tokenizer(distinct, padding="max_length", truncation=True, return_tensors="pt")
    return LatentCaptionData(
        latents=latents,
        caption_index=torch.tensor([row[c] for c in captions]),
        captions=distinct,
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
    )

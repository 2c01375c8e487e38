"""LRM pretraining data from the latent Parquet shards of orchestration/commands/data_job.py.

A shard row holds `latent` (safetensors bytes of one (1, C, h, w) latent, already times the
VAE's scaling factor: the z0 of RG-LCD) and `caption`; the folder's `manifest.json` records
the scaling factor and latent shape. Nothing is VAE-encoded here. The last shard(s), in name
order, are held out for zero-shot retrieval and read whole (their size is set by the data
job's --rows-per-shard, not by the data set's).

The training shards are streamed, never held: under Ray Train as a Ray Dataset that Ray
splits between the workers (`latent_dataset`, `ray_batches`), in a local run straight from
Parquet record batches (`local_batches`). Either way a worker holds a few batches and a
shuffle buffer, so its memory does not grow with the number of rows. Each batch is a
`LatentCaptionData` of its own captions (`batch_split`), what `contrastive_step` takes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pyarrow.parquet as pq
import torch

from rglcd import storage
from rglcd.codecs import decode_latents
from trainer.lrm.pretrain import LatentCaptionData

MANIFEST = "manifest.json"
COLUMNS = ["latent", "caption"]


def read_manifest(folder: str) -> dict:
    """data_job's manifest.json (scaling_factor, latent_shape, shards), ValueError if absent.

    `folder` is a location: a local path or an object-store URI (rglcd/storage.py).
    """
    path = storage.join(str(folder), MANIFEST)
    if not storage.is_file(path):
        raise ValueError(
            f"{folder} has no {MANIFEST}: point data.latents at the output folder of "
            "rglcd-data-job (orchestration/commands/data_job.py)"
        )
    manifest = json.loads(storage.read_text(path))
    if not manifest.get("shards") or manifest.get("latent_shape") is None:
        raise ValueError(f"{path} lists no shards (num_written={manifest.get('num_written')})")
    return manifest


def split_shards(folder: str, heldout: int) -> tuple[list[str], list[str]]:
    """(training shard files, held-out shard files): the last `heldout` shards in name order."""
    files = [storage.join(str(folder), s["file"]) for s in read_manifest(folder)["shards"]]
    if heldout < 1 or len(files) <= heldout:
        raise ValueError(
            f"{folder} has {len(files)} latent shard(s); holding out {heldout} for retrieval "
            "needs more: write smaller shards (rglcd-data-job rows_per_shard=...) or lower "
            "data.heldout_shards"
        )
    return files[:-heldout], files[-heldout:]


def _parquet(location: str) -> pq.ParquetFile:
    fs, path = storage.parse(location)
    return pq.ParquetFile(path, filesystem=fs)


def decode_column(raw: list[bytes]) -> torch.Tensor:
    """(N, C, h, w) float16 latents from N safetensors/.npy cells, filled in place."""
    first = decode_latents(raw[0])  # (1, C, h, w)
    out = torch.empty((len(raw), *first.shape[1:]), dtype=torch.float16)
    out[0] = first[0]
    for i, cell in enumerate(raw[1:], start=1):
        out[i] = decode_latents(cell)[0]
    return out


def read_latent_captions(files: list[str], max_rows: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """(N, C, h, w) float16 latents and their N captions from the shard files, in order.

    For the held-out split only: it is read whole, into one preallocated tensor.
    """
    rows = sum(_parquet(f).metadata.num_rows for f in files)
    rows = rows if max_rows is None else min(rows, max_rows)
    if rows == 0:
        raise ValueError(f"the latent shards {[storage.basename(f) for f in files]} hold no rows")
    latents, captions = None, []
    for file in files:
        for batch in _parquet(file).iter_batches(batch_size=1024, columns=COLUMNS):
            take = min(batch.num_rows, rows - len(captions))
            decoded = decode_column(batch.column("latent").to_pylist()[:take])
            if latents is None:
                latents = torch.empty((rows, *decoded.shape[1:]), dtype=torch.float16)
            latents[len(captions) : len(captions) + take] = decoded
            captions += [str(c) for c in batch.column("caption").to_pylist()[:take]]
            if len(captions) == rows:
                return latents, captions
    return latents, captions


def batch_split(latents: torch.Tensor, captions: list[str], tokenizer) -> LatentCaptionData:
    """One batch (or split) ranked against its own distinct captions."""
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


def latent_split(files: list[str], tokenizer, max_rows: int | None = None) -> LatentCaptionData:
    """A held-out split for `evaluate_retrieval`, ranked against its own captions."""
    return batch_split(*read_latent_captions(files, max_rows), tokenizer)


def _shuffled(rows: Iterator[tuple[bytes, str]], buffer: int, rng: random.Random):
    """Rows in a locally shuffled order: each comes out of a `buffer`-row reservoir."""
    pool: list = []
    for row in rows:
        if len(pool) < buffer:
            pool.append(row)
            continue
        k = rng.randrange(buffer)
        yield pool[k]
        pool[k] = row
    rng.shuffle(pool)
    yield from pool


def _file_rows(files: list[str], rng: random.Random, max_rows: int | None):
    """(latent bytes, caption) of one epoch: files in a shuffled order, `max_rows` at most."""
    order = list(files)
    rng.shuffle(order)
    seen = 0
    for file in order:
        for batch in _parquet(file).iter_batches(batch_size=1024, columns=COLUMNS):
            for raw, caption in zip(batch.column("latent").to_pylist(),
                                    batch.column("caption").to_pylist(), strict=True):
                if max_rows is not None and seen >= max_rows:
                    return
                seen += 1
                yield raw, str(caption)


def local_batches(
    files: list[str], batch_size: int, seed: int, max_rows: int | None = None,
    shuffle_rows: int | None = None,
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Endless full batches ((B, C, h, w) float16 latents, B captions), epoch after epoch.

    Each epoch visits the files in a new order and shuffles rows within a buffer of
    `shuffle_rows` (default 8 batches); memory is that buffer, not the data set.
    """
    rng = random.Random(seed)
    buffer = shuffle_rows or 8 * batch_size
    while True:
        raw, captions, batches = [], [], 0
        for cell, caption in _shuffled(_file_rows(files, rng, max_rows), buffer, rng):
            raw.append(cell)
            captions.append(caption)
            if len(raw) == batch_size:
                yield decode_column(raw), captions
                raw, captions, batches = [], [], batches + 1
        if batches == 0:
            raise ValueError(
                f"the training shards hold fewer rows than one batch ({batch_size}); "
                "lower --batch-size or raise --max-rows"
            )


def latent_dataset(files: list[str], seed: int, max_rows: int | None = None):
    """The training shards as a lazy Ray Dataset of (latent bytes, caption) rows.

    Files come in a new order each epoch (FileShuffleConfig reseeds after each execution);
    Ray Train splits the stream between the workers (`ray.train.get_dataset_shard`).
    """
    from ray.data import FileShuffleConfig  # deferred: a local run does without Ray

    from rglcd.ray_parquet import read_parquet  # deferred: loads ray

    fs, _ = storage.parse(files[0])  # one folder: one filesystem (S3 endpoint from the env)
    paths = [storage.parse(f)[1] for f in files]
    dataset = read_parquet(paths, filesystem=fs, columns=COLUMNS,
                           shuffle=FileShuffleConfig(seed=seed))
    return dataset if max_rows is None else dataset.limit(max_rows)


def ray_batches(
    shard, batch_size: int, seed: int, shuffle_rows: int | None = None
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Endless full batches from this worker's `DataIterator`, epoch after epoch."""
    epoch = 0
    while True:
        for batch in shard.iter_batches(
            batch_size=batch_size, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=shuffle_rows or 8 * batch_size,
            local_shuffle_seed=seed + epoch,
        ):
            yield decode_column(list(batch["latent"])), [str(c) for c in batch["caption"]]
        epoch += 1


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""Training data on Ray Data: Parquet shards -> scaled VAE latents + captions -> local batches.

Shards hold either images or pre-encoded latents (never guessed: the columns decide, and a
shard with neither is an error, unlike the reference code, docs/method.md §6):
  images:  ``image`` (PNG/JPEG bytes) + ``caption``  -> encoded by `EncodeImages`
  latents: ``latent`` (safetensors/.npy bytes of one (1, C, h, w) latent that is already
           multiplied by the VAE scaling factor) + ``caption``
Images are encoded in a Ray Data ``map_batches`` stage (Algorithm 3, line 1:
``z = vae.encode(x).latent_dist.sample() * scaling_factor``), not in the training step.

Every row gets a `sample_key`: a 63-bit hash of its content. The trainer draws each sample's
noise, solver index and guidance scale from (seed, step, sample_key), and the VAE's latent
sample from (seed, sample_key), so results do not depend on which worker sees a row.

Sharding: every worker reads the same ordered stream (the dataset is not split by Ray) and
keeps its own slice of each global batch (`local_batches`). Which rows form a global batch
is then a function of the seed alone, so a 2-worker run sees exactly the batches of a 1-worker
run and a resumed run continues with the very next batch. The price is that each worker reads
(and, for image shards, encodes) the whole stream; at scale, pre-encode latents.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rglcd import storage
from rglcd.codecs import decode_latents
from rglcd.ray_parquet import read_parquet
from trainer.models import load_vae
from trainer.run_outputs.checkpointing import DataPosition

IMAGE_COLUMN = "image"
LATENT_COLUMN = "latent"
CAPTION_COLUMN = "caption"
KEY_BITS = 63


def content_key(*parts: bytes | str) -> int:
    """A stable 63-bit key for a row's content (blake2b; same bytes -> same key everywhere)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part.encode("utf-8") if isinstance(part, str) else bytes(part))
        digest.update(b"\x00")
    return int.from_bytes(digest.digest(), "little") >> (64 - KEY_BITS)


def mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit generator seed (order matters)."""
    return content_key(*(int(v).to_bytes(8, "little", signed=True) for v in values))


def shard_format(
    columns: list[str], image: str, latent: str, caption: str, fmt: str = "auto"
) -> str:
    """"images" or "latents" for a Parquet schema's column names; ValueError otherwise.

    `fmt` "auto" picks latents when the latent column exists, else images; an explicit
    format must find its column.
    """
    if caption not in columns:
        raise ValueError(
            f"data shards need a caption column {caption!r} (data.caption_column); "
            f"found {columns}."
        )
    if fmt == "auto":
        fmt = "latents" if latent in columns else "images"
    wanted = {"images": (image, "data.image_column"), "latents": (latent, "data.latent_column")}
    if fmt not in wanted:
        raise ValueError(f"data.format={fmt!r} is unknown; use auto, images or latents.")
    column, key = wanted[fmt]
    if column not in columns:
        raise ValueError(
            f"data shards have no {fmt[:-1]} column {column!r} ({key}); found {columns}. "
            f"Set {key} to the right column, or data.format to the kind of data the shards hold."
        )
    return fmt


def load_image(raw: bytes, resolution: int) -> np.ndarray:
    """Image bytes -> (3, R, R) float32 in [-1, 1]: shortest side to R (bicubic), centre crop."""
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    scale = resolution / min(image.size)
    if scale != 1.0:
        width, height = round(image.width * scale), round(image.height * scale)
        size = (max(resolution, width), max(resolution, height))
        image = image.resize(size, Image.Resampling.BICUBIC)  # PIL always antialiases
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)  # (3, R, R)
    return array / 127.5 - 1.0


class EncodeImages:
    """Ray Data class UDF: image bytes + captions -> scaled latents, captions, sample keys.

    Loads the teacher's VAE once per actor. Each row's posterior sample uses its own
    generator seeded from (seed, sample_key), so encoding is deterministic per image.
    """

    def __init__(
        self, vae: str, resolution: int, seed: int, device: str = "cpu", revision: str | None = None
    ) -> None:
        self.vae = load_vae(vae, revision).requires_grad_(False).eval().to(device)
        self.resolution = resolution
        self.seed = seed
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        captions = [str(c) for c in batch[CAPTION_COLUMN]]
        raws = list(batch[IMAGE_COLUMN])
        keys = np.array([content_key(r, c) for r, c in zip(raws, captions, strict=True)])
        pixels = torch.from_numpy(np.stack([load_image(r, self.resolution) for r in raws]))
        posterior = self.vae.encode(pixels.to(self.device)).latent_dist
        noise = torch.stack([_row_noise(posterior.mean.shape[1:], self.seed, k) for k in keys])
        latents = posterior.mean + posterior.std * noise.to(self.device)  # latent_dist.sample()
        latents = latents * self.vae.config.scaling_factor  # (B, C, h, w)
        return {
            "latents": latents.float().cpu().numpy(),
            CAPTION_COLUMN: np.array(captions, dtype=object),
            "sample_key": keys.astype(np.int64),
        }


def _row_noise(shape: torch.Size, seed: int, key: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(mix_seed(seed, key))
    return torch.randn(shape, generator=generator)


def decode_latent_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data UDF for latent shards: latent bytes -> (B, C, h, w) float32, captions, keys."""
    captions = [str(c) for c in batch[CAPTION_COLUMN]]
    raws = list(batch[LATENT_COLUMN])
    latents = [decode_latents(bytes(r)) for r in raws]  # each (1, C, h, w)
    if any(lat.shape[0] != 1 for lat in latents):
        raise ValueError("each latent row must hold exactly one latent of shape (1, C, h, w).")
    keys = np.array([content_key(r, c) for r, c in zip(raws, captions, strict=True)])
    return {
        "latents": torch.cat(latents).numpy(),
        CAPTION_COLUMN: np.array(captions, dtype=object),
        "sample_key": keys.astype(np.int64),
    }


def parquet_files(source: str | Path) -> list[str]:
    """The Parquet files (locations, sorted) of a folder, a glob in a folder, or one file, local
    or in object storage; ValueError if there are none."""
    source = str(source)
    folder, pattern = source, "*.parquet"
    if any(ch in storage.basename(source) for ch in "*?["):
        folder, pattern = source[: -len(storage.basename(source)) - 1], storage.basename(source)
    try:
        if storage.is_file(source):
            return [source]
        files = storage.list_files(folder, pattern)
    except OSError as err:
        raise ValueError(f"data.train_path={source!r} cannot be listed: {err}") from err
    if not files:
        raise ValueError(
            f"data.train_path={source!r} holds no Parquet shards; point it at a folder of "
            "*.parquet files with (image, caption) or (latent, caption) columns."
        )
    return files


def parquet_columns(location: str) -> list[str]:
    """The column names of one Parquet file (local or in object storage; footer only)."""
    import pyarrow.parquet as pq

    filesystem, path = storage.parse(location)
    return pq.read_schema(path, filesystem=filesystem).names


def build_train_dataset(
    files: list[str],
    vae: str,
    resolution: int,
    seed: int,
    fmt: str = "auto",
    columns: tuple[str, str, str] = (IMAGE_COLUMN, LATENT_COLUMN, CAPTION_COLUMN),
    encode_batch_size: int = 256,
    encoder_actors: int = 1,
    encoder_gpus: float = 0.0,
    revision: str | None = None,
):
    """The lazy Ray Dataset of (latents, caption, sample_key) rows, in file order.

    `columns` are the shards' (image, latent, caption) column names; `vae` is the teacher
    folder (or a VAE folder) whose encoder the `EncodeImages` actors load.
    """
    from ray.data import ActorPoolStrategy

    image, latent, caption = columns
    fmt = shard_format(parquet_columns(files[0]), image, latent, caption, fmt)
    source = image if fmt == "images" else latent
    canonical = IMAGE_COLUMN if fmt == "images" else LATENT_COLUMN
    # One filesystem for all shards (they share a folder): an s3:// endpoint from the AWS
    # environment reaches Ray Data's read tasks on every node (rglcd/storage.py).
    filesystem = storage.parse(files[0])[0]
    paths = [storage.parse(f)[1] for f in files]
    dataset = read_parquet(paths, columns=[source, caption], filesystem=filesystem)  # V1
    renames = {k: v for k, v in {source: canonical, caption: CAPTION_COLUMN}.items() if k != v}
    if renames:
        dataset = dataset.rename_columns(renames)
    # Ray Data reads small files as one block and a map stage emits a block only when it has
    # worked through its input block, so without this the first training batch waits for the
    # whole dataset to be encoded (~95 s of CPU for the 10k toy images). Blocks of one
    # encoding batch stream: the trainer starts after the first one.
    dataset = dataset.repartition(target_num_rows_per_block=encode_batch_size)
    if fmt == "latents":
        return dataset.map_batches(decode_latent_rows, batch_size=encode_batch_size)
    return dataset.map_batches(
        EncodeImages,
        fn_constructor_kwargs={
            "vae": vae,
            "revision": revision,
            "resolution": resolution,
            "seed": seed,
            "device": "cuda" if encoder_gpus > 0 else "cpu",
        },
        batch_size=encode_batch_size,
        compute=ActorPoolStrategy(size=encoder_actors),
        num_cpus=1.0,
        num_gpus=encoder_gpus,
    )


@dataclass
class LocalBatch:
    """This worker's slice of one global batch."""

    latents: torch.Tensor  # (b, C, h, w) float32, scaled
    captions: list[str]
    sample_keys: torch.Tensor  # (b,) int64
    position: DataPosition  # stream position after this global batch


def local_batches(
    shard,
    global_batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    start: DataPosition | None = None,
    shuffle_buffer: int = 0,
) -> Iterator[LocalBatch]:
    """Endless local batches from a Ray `DataIterator` over the whole (unsplit) stream.

    Epoch e reads the stream with a local shuffle seeded by (seed, e); global batches are
    cut with drop_last and rank r keeps rows [r*b, (r+1)*b), b = global / world_size.
    `start` skips the batches a resumed run already consumed.
    """
    assert global_batch_size % world_size == 0, "validated by the config"
    local = global_batch_size // world_size
    position = start or DataPosition()
    epoch, skip = position.epoch, position.batches_consumed
    while True:
        batches = shard.iter_batches(
            batch_size=global_batch_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=shuffle_buffer or None,
            local_shuffle_seed=mix_seed(seed, epoch) if shuffle_buffer else None,
        )
        count = 0
        for index, batch in enumerate(batches):
            count += 1
            if index < skip:
                continue
            rows = slice(rank * local, (rank + 1) * local)
            yield LocalBatch(
                latents=torch.from_numpy(np.array(batch["latents"][rows])),  # a writable copy
                captions=[str(c) for c in batch[CAPTION_COLUMN][rows]],
                sample_keys=torch.from_numpy(batch["sample_key"][rows].astype(np.int64)),
                position=DataPosition(epoch=epoch, batches_consumed=index + 1),
            )
        if count == 0:
            raise ValueError(
                f"the training data has fewer rows than one global batch ({global_batch_size}); "
                "add data or lower the batch size."
            )
        epoch, skip = epoch + 1, 0


class EarlyFirstBatch:
    """An iterator over `batches` whose first item is fetched on a helper thread from the
    moment it is made. A worker makes it before loading its models: the data pipeline's
    start-up (Ray Data's actors and first reads) then overlaps the model loading instead of
    following it. Same items, same order; after the first, plain `next(batches)`."""

    def __init__(self, batches: Iterator[LocalBatch]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._batches = batches
        self._executor = ThreadPoolExecutor(1, "rglcd-first-batch")
        self._first = self._executor.submit(next, batches)
        self._executor.shutdown(wait=False)  # its one task still runs; nothing else is queued

    def __iter__(self) -> EarlyFirstBatch:
        return self

    def __next__(self) -> LocalBatch:
        if self._first is not None:
            first, self._first = self._first, None
            return first.result()  # re-raises what the fetch raised (e.g. too little data)
        return next(self._batches)

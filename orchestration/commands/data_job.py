"""Pre-encode (image, caption) data into latent Parquet shards with the teacher's VAE, on Ray Data.

    rglcd-data-job input=/data/cc12m-wds output=/data/cc12m-latents-512 \
        teacher=runwayml/stable-diffusion-v1-5 resolution=512 [min_size=64] \
        [num_gpus=1 encoders=8 batch_size=64]
    rglcd-data-job --config job.yaml [key=value ...]    # the same keys in a YAML file

Then train with `data.train_path=/data/cc12m-latents-512` (the trainer reads these shards
directly; no VAE encoding in the training loop). `rglcd-data-job` is `python -m
orchestration.commands.data_job`; on a cluster, submit that with `ray job submit --working-dir
. -- python -m orchestration.commands.data_job ...` (docs/cluster.md).

Settings: `DataJobConfig` below (`--config FILE` and `key=value` overrides, as every command).
Input (`input`: a folder, glob, file or URI such as s3://bucket/cc12m; pyarrow filesystems):
  WebDataset tar shards (img2dataset layout): `<key>.jpg|jpeg|png|webp` + `<key>.txt` or
    `<key>.json` with a "caption" field; img2dataset's `.parquet` metadata sidecars beside the
    tars are recognised and not read; or
  Parquet with an image-bytes column (`image_column`, default "image") and a caption column
    (`caption_column`, default "caption").
Output (`output`, local folder or URI): `latents-<hash>.parquet` shards (schema in
orchestration/data/shards.py) and `manifest.json` (rows written, rows skipped by reason and
which ones, resolution, VAE, scaling factor, latent shape, shard list).

Stages: read -> decode + filter + resize/centre-crop (CPU tasks) -> VAE encode (class UDF, on
GPUs with num_gpus) -> write shards. Undecodable, tiny or caption-less samples are counted
and listed, never fatal. Latents are posterior samples times the scaling factor (docs/method.md
§1, as the trainer encodes), seeded per sample; `posterior=mean` stores the mean.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pyarrow import fs as pafs
from pydantic import Field

from orchestration.data.encode import LatentEncoder, load_vae, vae_downsampling
from orchestration.data.layouts import is_img2dataset_webdataset
from orchestration.data.samples import (
    SkipSample,
    prepare_sample,
    webdataset_caption,
    webdataset_image,
)
from orchestration.data.shards import (
    build_manifest,
    prepare_output,
    resolve_uri,
    write_manifest,
    write_shard,
)
from rglcd.config_base import StrictModel
from rglcd.config_cli import config_from_args, config_parser, parse_config_args
from rglcd.ray_parquet import read_parquet
from trainer.data import content_key


class DataJobConfig(StrictModel):
    """Settings of one pre-encoding run: `rglcd-data-job [--config FILE] [key=value ...]`."""

    input: str = Field(description="Tar/Parquet folder, glob, file or URI (required).")
    output: str = Field(description="Output folder or URI (required).")
    teacher: str = Field(description="Pipeline folder or cached hub id (required).")
    resolution: int = Field(512, ge=8, multiple_of=8, description="Square side in pixels.")
    min_size: int = Field(64, ge=1, description="Shorter image side below this: skipped.")
    format: Literal["auto", "webdataset", "parquet"] = "auto"
    image_column: str = "image"
    caption_column: str = "caption"
    vae_subfolder: str = Field("vae", description="'' for a folder that is itself a VAE.")
    posterior: Literal["sample", "mean"] = "sample"
    vae_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    latent_dtype: Literal["float16", "float32"] = "float16"
    seed: int = 0
    batch_size: int = Field(32, ge=1)
    rows_per_shard: int = Field(2048, ge=1)
    encoders: int = Field(1, ge=1, description="VAE encoder actors.")
    num_gpus: float = Field(0.0, ge=0, description="Per encoder actor.")
    cpus_per_encoder: float = Field(1.0, gt=0)
    overwrite: bool = Field(False, description="Replace an earlier run's output.")

    def input_format(self) -> str:
        return self.format if self.format != "auto" else detect_format(self.input)


def detect_format(uri: str) -> str:
    """'webdataset' or 'parquet' from the input's name, or from the files of a folder."""
    names = [uri.rstrip("/")]
    filesystem, path = resolve_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"input={uri!r} does not exist; pass a folder, file or URI of shards")
    if info.type == pafs.FileType.Directory:
        names = [f.path for f in filesystem.get_file_info(pafs.FileSelector(path))]
    if is_img2dataset_webdataset(names):  # tars + their .parquet metadata sidecars
        return "webdataset"
    kinds = {
        "webdataset" if n.endswith(".tar") else "parquet"
        for n in names
        if n.endswith((".tar", ".parquet"))
    }
    if len(kinds) != 1:
        raise ValueError(
            f"input={uri!r} holds {'both .tar and .parquet' if kinds else 'no .tar or .parquet'}"
            " files; point it at one kind of shard, or pass format=webdataset|parquet"
        )
    return kinds.pop()


def read_samples(cfg: DataJobConfig):
    """A Ray Dataset of raw samples: key, image (bytes), caption (str or None)."""
    import ray.data

    filesystem, path = resolve_uri(cfg.input)  # one filesystem object: the S3 endpoint travels
    if cfg.input_format() == "webdataset":
        dataset = ray.data.read_webdataset(
            path,
            filesystem=filesystem,
            decoder=None,  # keep raw bytes: a broken image must be skipped, not crash the read
            suffixes=["jpg", "jpeg", "png", "webp", "txt", "json"],
            file_extensions=["tar"],
        )
        return dataset.map_batches(_from_webdataset, batch_format="pandas")
    dataset = read_parquet(  # V1 datasource: rglcd/ray_parquet.py
        path, columns=[cfg.image_column, cfg.caption_column], include_paths=True,
        filesystem=filesystem,
    )
    return dataset.map_batches(
        _from_parquet,
        fn_kwargs={"image_column": cfg.image_column, "caption_column": cfg.caption_column},
        batch_format="pandas",
    )


def _from_webdataset(frame):
    import pandas as pd

    records = frame.to_dict("records")
    return pd.DataFrame(
        {
            "key": [f"{r.get('__url__', '')}::{r['__key__']}" for r in records],
            "image": [webdataset_image(r) for r in records],
            "caption": [webdataset_caption(r) for r in records],
        }
    )


def _from_parquet(frame, image_column: str, caption_column: str):
    import pandas as pd

    images = [v if isinstance(v, (bytes, bytearray)) else None for v in frame[image_column]]
    # Parquet rows have no names: a row is known by its file and a hash of its image bytes.
    keys = [
        f"{path}::{content_key(image or b'', 'row'):016x}"
        for path, image in zip(frame["path"], images, strict=True)
    ]
    captions = [
        v.strip() if isinstance(v, str) and v.strip() else None for v in frame[caption_column]
    ]
    return pd.DataFrame({"key": keys, "image": images, "caption": captions})


def prepare_batch(batch: dict[str, np.ndarray], resolution: int, min_size: int) -> dict:
    """Decode, filter and crop a batch; unusable rows get a skip_reason and zero pixels."""
    size = len(batch["key"])
    pixels = np.zeros((size, resolution, resolution, 3), dtype=np.uint8)
    keys = np.zeros(size, dtype=np.int64)
    reasons, details = [""] * size, [""] * size
    for i in range(size):
        raw, caption = batch["image"][i], batch["caption"][i]
        try:
            pixels[i], keys[i] = prepare_sample(
                raw if isinstance(raw, (bytes, bytearray)) else None,
                caption if isinstance(caption, str) else None,
                resolution,
                min_size,
            )
        except SkipSample as skip:
            reasons[i], details[i] = skip.reason, skip.detail
    return {
        "key": batch["key"],
        "caption": np.array([str(c or "") for c in batch["caption"]], dtype=object),
        "pixels": pixels,  # (B, R, R, 3) uint8
        "sample_key": keys,
        "skip_reason": np.array(reasons, dtype=object),
        "skip_detail": np.array(details, dtype=object),
    }


def run_data_job(cfg: DataJobConfig) -> dict[str, Any]:
    """Run the pipeline on the current Ray cluster; returns the manifest it wrote."""
    from ray.data import ActorPoolStrategy

    vae = load_vae(cfg.teacher, cfg.vae_subfolder)  # fail fast, before any Ray work
    settings = {
        "input": cfg.input,
        "teacher": cfg.teacher,
        "vae_subfolder": cfg.vae_subfolder,
        "resolution": cfg.resolution,
        "min_size": cfg.min_size,
        "scaling_factor": float(vae.config.scaling_factor),
        "vae_downsampling": vae_downsampling(vae),
        "posterior": cfg.posterior,
        "latent_dtype": cfg.latent_dtype,
        "seed": cfg.seed,
        "latent_format": "safetensors (1, C, h, w), scaled by scaling_factor",
    }
    del vae
    prepare_output(cfg.output, cfg.overwrite)
    encoded = (
        read_samples(cfg)
        .map_batches(
            prepare_batch,
            fn_kwargs={"resolution": cfg.resolution, "min_size": cfg.min_size},
            batch_size=cfg.batch_size,
        )
        .map_batches(
            LatentEncoder,
            fn_constructor_kwargs={
                "teacher": cfg.teacher,
                "subfolder": cfg.vae_subfolder,
                "seed": cfg.seed,
                "device": "cuda" if cfg.num_gpus > 0 else "cpu",
                "posterior": cfg.posterior,
                "compute_dtype": cfg.vae_dtype,
                "store_dtype": cfg.latent_dtype,
            },
            batch_size=cfg.batch_size,
            compute=ActorPoolStrategy(size=cfg.encoders),
            num_gpus=cfg.num_gpus,
            num_cpus=cfg.cpus_per_encoder,
        )
    )
    stats = encoded.map_batches(
        write_shard, fn_kwargs={"output": cfg.output}, batch_size=cfg.rows_per_shard
    )
    manifest = build_manifest(stats.take_all(), settings)
    manifest["config"] = cfg.model_dump(mode="json")
    write_manifest(cfg.output, manifest)
    return manifest


def parse_args(argv: list[str] | None = None) -> DataJobConfig:
    parser = config_parser(__doc__.split("\n\n")[0], "YAML with DataJobConfig keys")
    return config_from_args(parser, DataJobConfig, parse_config_args(parser, argv, DataJobConfig))


def main(argv: list[str] | None = None) -> None:
    import ray

    cfg = parse_args(argv)
    ray.init()  # attaches to RAY_ADDRESS / a running cluster, else starts a local one
    manifest = run_data_job(cfg)
    print(
        f"wrote {manifest['num_written']} latents in {len(manifest['shards'])} shard(s) to "
        f"{cfg.output}; skipped {manifest['num_skipped']} {manifest['skipped_by_reason']}"
    )


if __name__ == "__main__":
    main()

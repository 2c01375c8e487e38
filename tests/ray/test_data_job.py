"""The latent pre-encoding job (orchestration/commands/data_job.py) on the shared Ray cluster.

A tiny SD pipeline (16x16 images <-> 4x8x8 latents, VAE downsampling 2) stands in for the
teacher; WebDataset tars and Parquet inputs are built here with PIL, including a corrupt image,
a tiny image and a sample without caption, which the job must skip and report, not crash on.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from orchestration.commands.data_job import DataJobConfig, detect_format, parse_args, run_data_job
from orchestration.data.samples import SkipSample, prepare_sample, webdataset_caption
from orchestration.data.shards import MANIFEST_NAME, prepare_output
from rglcd.codecs import decode_latents
from rglcd.tiny_models import save_tiny_sd_pipeline
from trainer.data import EncodeImages, build_train_dataset, load_image, parquet_files

RESOLUTION = 16
SIZES = [(20, 24), (32, 16), (16, 16), (40, 30), (17, 33), (64, 48)]  # (width, height)


def _image_bytes(width: int, height: int, seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _good_samples() -> list[tuple[str, str, bytes, str]]:
    """(key, image suffix, image bytes, caption) for the six decodable images."""
    out = []
    for i, (w, h) in enumerate(SIZES):
        fmt, suffix = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
        out.append((f"good{i:02d}", suffix, _image_bytes(w, h, seed=i, fmt=fmt), f"picture {i}"))
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_tars(folder) -> dict[str, str]:
    """Two WebDataset shards; returns {sample key: expected skip reason} for the bad ones."""
    folder.mkdir()
    good = _good_samples()
    with tarfile.open(folder / "shard-000000.tar", "w") as tar:
        for key, suffix, raw, caption in good[:3]:
            _add(tar, f"{key}.{suffix}", raw)
            _add(tar, f"{key}.txt", caption.encode())
        _add(tar, "broken.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg")
        _add(tar, "broken.txt", b"a broken picture")
    with tarfile.open(folder / "shard-000001.tar", "w") as tar:
        for key, suffix, raw, caption in good[3:]:
            _add(tar, f"{key}.{suffix}", raw)
            _add(tar, f"{key}.json", json.dumps({"caption": caption, "url": "x"}).encode())
        _add(tar, "tiny.png", _image_bytes(8, 8, seed=99))
        _add(tar, "tiny.txt", b"a tiny picture")
    return {
        f"{folder / 'shard-000000.tar'}::broken": "undecodable",
        f"{folder / 'shard-000001.tar'}::tiny": "too_small",
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("teacher") / "sd", seed=3)


def _shard_rows(output) -> dict[str, dict]:
    table = pa.concat_tables(pq.read_table(f) for f in sorted(output.glob("*.parquet")))
    return {row["caption"]: row for row in table.to_pylist()}


def test_webdataset_to_latent_parquet(ray_cluster, teacher, tmp_path):
    expected_skips = _write_tars(tmp_path / "wds")
    output = tmp_path / "latents"
    cfg = DataJobConfig(
        input=str(tmp_path / "wds"),
        output=str(output),
        teacher=str(teacher),
        resolution=RESOLUTION,
        min_size=12,
        batch_size=4,
    )
    manifest = run_data_job(cfg)

    on_disk = json.loads((output / MANIFEST_NAME).read_text())
    assert on_disk["num_written"] == manifest["num_written"] == 6
    assert {s["key"]: s["reason"] for s in on_disk["skipped"]} == expected_skips
    assert on_disk["skipped_by_reason"] == {
        "missing_image": 0,
        "missing_caption": 0,
        "undecodable": 1,
        "too_small": 1,
    }
    assert on_disk["latent_shape"] == [4, RESOLUTION // 2, RESOLUTION // 2]
    assert on_disk["vae_downsampling"] == 2 and on_disk["resolution"] == RESOLUTION
    assert sum(s["rows"] for s in on_disk["shards"]) == 6
    assert sorted(p.name for p in output.glob("*.parquet")) == [
        s["file"] for s in on_disk["shards"]
    ]

    # The stored latents are exactly what the trainer's own image path would encode
    # (same resize/crop, same per-sample posterior noise), up to float16 storage.
    rows = _shard_rows(output)
    assert set(rows) == {caption for *_, caption in _good_samples()}
    encoder = EncodeImages(str(teacher), RESOLUTION, 0)
    good = _good_samples()
    reference = encoder(
        {
            "image": np.array([g[2] for g in good], dtype=object),
            "caption": np.array([g[3] for g in good], dtype=object),
        }
    )["latents"]
    for (_, _, _, caption), expected in zip(good, reference, strict=True):
        stored = decode_latents(rows[caption]["latent"])  # (1, C, h, w) float32
        assert rows[caption]["latent_shape"] == [4, 8, 8]
        torch.testing.assert_close(stored[0], torch.from_numpy(expected), atol=2e-3, rtol=2e-3)

    # Decode-consistent: the VAE decodes them back to R x R images.
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(teacher / "vae").eval()
    latents = torch.cat([decode_latents(r["latent"]) for r in rows.values()])
    with torch.no_grad():
        images = vae.decode(latents / vae.config.scaling_factor).sample
    assert images.shape == (6, 3, RESOLUTION, RESOLUTION) and torch.isfinite(images).all()

    # The trainer reads the shards as latent shards.
    train = build_train_dataset(parquet_files(output), str(teacher), RESOLUTION, 0)
    batch = train.take_batch(6, batch_format="numpy")
    assert batch["latents"].shape == (6, 4, 8, 8)
    assert sorted(batch["caption"]) == sorted(rows)


def test_parquet_input_and_rerun_guard(ray_cluster, teacher, tmp_path):
    good = _good_samples()[:3]
    images = [g[2] for g in good] + [b"GIF89a-garbage", _image_bytes(30, 30, seed=7)]
    captions = [g[3] for g in good] + ["garbage", None]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"jpg": images, "text": captions}), tmp_path / "in" / "part-0.parquet")
    (tmp_path / "job.yaml").write_text("image_column: jpg\ncaption_column: text\n")
    argv = [
        "--config", str(tmp_path / "job.yaml"), f"input={tmp_path / 'in'}",
        f"output={tmp_path / 'out'}", f"teacher={teacher}", "resolution=16", "min_size=12",
        "posterior=mean",
    ]
    manifest = run_data_job(parse_args(argv))
    assert manifest["num_written"] == 3
    assert manifest["skipped_by_reason"]["undecodable"] == 1
    assert manifest["skipped_by_reason"]["missing_caption"] == 1
    assert manifest["posterior"] == "mean"

    with pytest.raises(ValueError, match="overwrite=true"):
        run_data_job(parse_args(argv))


def test_prepare_sample_matches_trainer_resize():
    raw = _image_bytes(40, 30, seed=5, fmt="JPEG")
    pixels, key = prepare_sample(raw, "a caption", 16, 8)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    expected = load_image(raw, 16)  # (3, R, R) in [-1, 1]
    np.testing.assert_array_equal(
        pixels.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1, expected
    )
    assert key == prepare_sample(raw, "a caption", 16, 8)[1] != prepare_sample(raw, "b", 16, 8)[1]


@pytest.mark.parametrize(
    ("raw", "caption", "reason"),
    [
        (None, "c", "missing_image"),
        (b"\x89PNG\r\n\x1a\n truncated", "c", "undecodable"),
        (_image_bytes(40, 6, seed=1), "c", "too_small"),
        (_image_bytes(40, 40, seed=1), "", "missing_caption"),
    ],
)
def test_prepare_sample_skip_reasons(raw, caption, reason):
    with pytest.raises(SkipSample) as info:
        prepare_sample(raw, caption, 16, 8)
    assert info.value.reason == reason


def test_webdataset_caption_sources():
    assert webdataset_caption({"txt": b" a cat \n"}) == "a cat"
    assert webdataset_caption({"json": b'{"caption": "a dog"}'}) == "a dog"
    assert webdataset_caption({"json": b"not json"}) is None
    assert webdataset_caption({"jpg": b"..."}) is None


def test_input_and_output_checks(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"")
    assert detect_format(str(tmp_path)) == "webdataset"
    (tmp_path / "b.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="both .tar and .parquet"):
        detect_format(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        detect_format(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="overwrite=true"):
        prepare_output(str(tmp_path), overwrite=False)
    prepare_output(str(tmp_path), overwrite=True)
    assert not list(tmp_path.glob("*.parquet")) and (tmp_path / "a.tar").exists()
    with pytest.raises(ValueError, match="multiple of 8"):
        DataJobConfig(input="x", output="y", teacher="z", resolution=20)

"""rglcd/storage.py against an S3-compatible store on loopback (moto's server, its own process)."""

from __future__ import annotations

from pathlib import Path

from rglcd import storage


def test_round_trip_listing_and_cache(s3_bucket, tmp_path):
    run = storage.join(s3_bucket, "runs", "r1")
    storage.write_text(storage.join(run, "report.md"), "# r1\n")
    storage.append_text(storage.join(run, "metrics.jsonl"), "1\n")
    storage.append_text(storage.join(run, "metrics.jsonl"), "2\n")
    assert storage.read_text(storage.join(run, "metrics.jsonl")) == "1\n2\n"
    assert storage.is_dir(run) and not storage.exists(storage.join(run, "nope"))
    assert storage.list_files(run, "*.md") == [f"{s3_bucket}/runs/r1/report.md"]

    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "weights.bin").write_bytes(b"w" * 1000)
    storage.upload_dir(model, storage.join(s3_bucket, "models", "tiny"))
    local = Path(storage.local_copy(f"{s3_bucket}/models/tiny", str(tmp_path / "cache")))
    assert (local / "unet" / "weights.bin").read_bytes() == b"w" * 1000
    assert storage.local_copy(f"{s3_bucket}/models/tiny", str(tmp_path / "cache")) == str(local)
    storage.remove(run)
    assert storage.list_files(run) == []


def test_toy_data_set_is_generated_into_the_bucket(s3_bucket):
    from rglcd.toy.data import ensure_toy_dataset, read_toy_table

    data = storage.join(s3_bucket, "runs", "toy-data")
    shards = ensure_toy_dataset(data, "train", 5, seed=0)
    assert shards == [f"{data}/train-00000.parquet"]
    assert ensure_toy_dataset(data, "train", 5, seed=0) == shards  # found, not rebuilt
    assert read_toy_table(data, "train").num_rows == 5

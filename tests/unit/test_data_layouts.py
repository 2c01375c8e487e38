"""The data job's input layouts recognised from file names (no Ray)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from orchestration.data.layouts import is_img2dataset_webdataset


def test_img2dataset_webdataset_output_is_tars_with_parquet_sidecars():
    names = ["out/00000.tar", "out/00000.parquet", "out/00000_stats.json",
             "out/00001.tar", "out/00001.parquet", "out/00001_stats.json"]
    assert is_img2dataset_webdataset(names)
    assert is_img2dataset_webdataset(["s3://b/cc12m/00007.tar", "s3://b/cc12m/00007.parquet"])


def test_other_layouts_are_not_img2dataset_webdataset():
    assert not is_img2dataset_webdataset(["a/00000.tar", "a/00001.tar"])  # plain tars
    assert not is_img2dataset_webdataset(["a/part-0.parquet", "a/part-1.parquet"])  # parquet
    # a parquet shard that is no tar's sidecar: a mixed folder stays ambiguous
    assert not is_img2dataset_webdataset(["a/00000.tar", "a/00000.parquet", "a/extra.parquet"])


def test_detect_format_reads_an_img2dataset_folder_as_webdataset(tmp_path):
    from orchestration.commands.data_job import detect_format

    (tmp_path / "00000.tar").write_bytes(b"")
    pq.write_table(pa.table({"key": ["000000000"], "caption": ["a cat"]}),
                   tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text("{}")
    assert detect_format(str(tmp_path)) == "webdataset"

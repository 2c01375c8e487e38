"""rglcd/storage.py on local paths and file:// URIs (the S3 path: tests/e2e/test_storage_s3.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from rglcd import storage


@pytest.fixture(params=["path", "uri"])
def root(request, tmp_path) -> str:
    """The same temporary folder as a plain path and as a file:// URI."""
    return str(tmp_path) if request.param == "path" else f"file://{tmp_path}"


def test_scheme_and_is_local():
    assert storage.scheme("/a/b") == "" and storage.scheme("rel/x") == ""
    assert storage.scheme("s3://b/k") == "s3" and storage.scheme("GS://b") == "gs"
    assert storage.is_local("/a") and storage.is_local("file:///a") and storage.is_local("x")
    assert storage.is_local("pkg://rglcd.toy/artifacts")
    assert not storage.is_local("s3://b/k") and not storage.is_local("gs://b/k")


def test_relative_path_made_absolute_on_the_reading_node(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.parse("outputs/run")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == os.path.join(str(tmp_path), "outputs", "run")
    assert storage.local_path("~/x") == os.path.join(os.path.expanduser("~"), "x")


def test_symlinks_are_not_resolved(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert storage.local_path(str(tmp_path / "link")) == str(tmp_path / "link")


def test_join_keeps_the_kind():
    assert storage.join("s3://b/runs", "r1", "metrics.jsonl") == "s3://b/runs/r1/metrics.jsonl"
    assert storage.join("s3://b/runs/", "r1") == "s3://b/runs/r1"
    assert storage.join("/tmp/x", "y") == "/tmp/x/y"
    assert storage.join("file:///tmp/x", "y") == "file:///tmp/x/y"
    assert storage.basename("s3://b/runs/r1/") == "r1"


def test_s3_location_parses_without_network(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fs, path = storage.parse("s3://bucket/runs/r1")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/runs/r1"


def test_write_read_list_remove(root):
    run = storage.join(root, "run")
    assert not storage.exists(run) and storage.list_files(run) == []
    storage.write_text(storage.join(run, "report.md"), "# report\n")
    storage.write_bytes(storage.join(run, "data", "train-00001.parquet"), b"b")
    storage.write_bytes(storage.join(run, "data", "train-00000.parquet"), b"a")
    storage.append_text(storage.join(run, "metrics.jsonl"), '{"step": 1}\n')
    storage.append_text(storage.join(run, "metrics.jsonl"), '{"step": 2}\n')
    assert storage.is_dir(run) and storage.is_file(storage.join(run, "report.md"))
    assert storage.read_text(storage.join(run, "report.md")) == "# report\n"
    assert storage.read_text(storage.join(run, "metrics.jsonl")).count("step") == 2
    shards = storage.list_files(storage.join(run, "data"), "*.parquet")
    assert shards == [storage.join(run, "data", f"train-0000{i}.parquet") for i in (0, 1)]
    assert len(storage.list_files(run, recursive=True)) == 4
    assert not any(".tmp-" in name for name in storage.list_files(run, recursive=True))
    with storage.open_output(storage.join(run, "deep", "x.bin")) as stream:
        stream.write(b"xyz")
    with storage.open_input(storage.join(run, "deep", "x.bin")) as stream:
        assert stream.read() == b"xyz"
    storage.remove(run)
    assert not storage.exists(run)
    storage.remove(run)  # missing: not an error


def _folder(path: Path) -> None:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "sub" / "weights.bin").write_bytes(b"\0" * 100)


def test_upload_download_and_staged_dir(root, tmp_path):
    _folder(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", storage.join(root, "model"))
    storage.download_dir(storage.join(root, "model"), tmp_path / "back")
    assert (tmp_path / "back" / "sub" / "weights.bin").read_bytes() == b"\0" * 100
    with storage.staged_dir(storage.join(root, "pipeline")) as local:
        (local / "model_index.json").write_text("{}")
    assert storage.is_file(storage.join(root, "pipeline", "model_index.json"))
    with pytest.raises(FileNotFoundError):
        storage.download_dir(storage.join(root, "missing"), tmp_path / "nothing")


def test_local_copy_of_a_local_folder_is_the_folder(tmp_path):
    assert storage.local_copy(str(tmp_path)) == str(tmp_path)
    assert storage.local_copy(f"file://{tmp_path}") == str(tmp_path)


def test_local_copy_downloads_once_per_node(tmp_path, monkeypatch):
    """A non-local location (here a local folder behind an fsspec scheme) is cached once."""
    _folder(tmp_path / "remote")
    remote = f"local://{tmp_path / 'remote'}"  # fsspec's local scheme: not is_local()
    assert not storage.is_local(remote)
    downloads = []
    real = storage.download_dir
    monkeypatch.setattr(storage, "download_dir", lambda *a: downloads.append(a) or real(*a))
    cache = str(tmp_path / "cache")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(storage.local_copy(remote, cache)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(downloads) == 1
    copy = Path(results[0])
    assert copy.is_relative_to(cache) and (copy / "sub" / "weights.bin").stat().st_size == 100
    (tmp_path / "remote" / "config.json").write_text('{"changed": true}')  # size differs
    assert storage.local_copy(remote, cache) == results[0] and len(downloads) == 2
    assert (copy / "config.json").read_text() == '{"changed": true}'


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(storage.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert storage.cache_root() == str(tmp_path / "rglcd")
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "c"))
    assert storage.cache_root() == str(tmp_path / "c")


def test_package_location_found_in_the_installed_package():
    location = storage.package_location("rglcd.toy", "artifacts", "pipeline")
    assert location == "pkg://rglcd.toy/artifacts/pipeline"
    path = storage.local_path(location)
    assert os.path.isfile(os.path.join(path, "model_index.json"))
    assert storage.is_dir(location) and storage.local_copy(location) == path
    with pytest.raises(ValueError, match="no installed package"):
        storage.local_path("pkg://no_such_pkg/x")


def test_local_copy_of_a_single_remote_file(tmp_path):
    _folder(tmp_path / "remote")
    remote = f"local://{tmp_path / 'remote' / 'config.json'}"
    copy = storage.local_copy(remote, str(tmp_path / "cache"))
    assert copy.endswith("config.json") and Path(copy).read_text() == "{}"
    assert sorted(os.listdir(os.path.dirname(copy))) == [".rglcd-complete.json", "config.json"]


def test_scorer_locations_are_made_local_on_the_loading_node(tmp_path, monkeypatch):
    from reward_service.config import ScorerConfig
    from reward_service.scorers.registry import localized

    _folder(tmp_path / "clip")
    spec = ScorerConfig(name="c", kind="toy-clip", checkpoint=f"local://{tmp_path / 'clip'}")
    assert not storage.is_local(spec.checkpoint)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    local = localized(spec)
    assert local.checkpoint.startswith(str(tmp_path / "cache"))
    shipped = ScorerConfig(name="t", kind="toy-clip", checkpoint="pkg://rglcd.toy/artifacts/miniclip")
    assert os.path.isdir(localized(shipped).checkpoint)
    hub = ScorerConfig(name="h", kind="clipscore", checkpoint="openai/clip-vit-large-patch14")
    assert localized(hub) is hub

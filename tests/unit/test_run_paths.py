"""Locations in a trainer config stay as written until the node that reads them opens them:
no driver-side resolving of paths (Ray unpacks a job's working directory separately on each
node, so a path resolved on the driver is not a path on another node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rglcd import storage
from rglcd.recipes import RECIPES_DIR
from trainer.config import load_trainer_config
from trainer.run import check_resume_checkpoint, run_storage, with_absolute_output


def test_relative_locations_are_read_where_they_are_opened(tmp_path: Path, monkeypatch):
    (tmp_path / "my-clip").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_trainer_config(
        "toy-rglcd-toy-clip",
        ["serve.scorers.1.checkpoint=my-clip", "output.dir=runs/a"],
    )
    clip = next(s for s in cfg.serve.scorers if s.name == "toy-clip")
    assert clip.checkpoint == "my-clip" and cfg.output.dir == "runs/a"
    assert cfg.lrm.checkpoint.startswith("pkg://")  # found in each node's own package copy
    assert run_storage(cfg) == str(tmp_path / "runs" / "a")  # the driver prints this


def test_relative_outputs_are_made_absolute_on_the_driver(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = with_absolute_output(load_trainer_config(
        None, ["output.root_dir=runs", "output.dir=runs/a"], check_paths=False))
    assert (cfg.output.root_dir, cfg.output.dir) == (str(tmp_path / "runs"), str(tmp_path / "runs" / "a"))
    remote = with_absolute_output(load_trainer_config(
        None, ["output.root_dir=s3://bucket/runs"], check_paths=False))
    assert remote.output.root_dir == "s3://bucket/runs" and remote.output.dir is None


def test_object_store_run_storage_is_printed_as_given():
    cfg = load_trainer_config(None, ["output.root_dir=s3://bucket/runs"], check_paths=False)
    assert run_storage(cfg) == "s3://bucket/runs/toy-rglcd"


def test_resume_finds_the_newest_checkpoint_folder(tmp_path: Path):
    cfg = load_trainer_config(None, [f"output.root_dir=file://{tmp_path}"], check_paths=False)
    assert check_resume_checkpoint(cfg) is None
    run = tmp_path / "toy-rglcd"
    for name in ("checkpoint_2026-01-01", "checkpoint_2026-01-02"):
        (run / name).mkdir(parents=True)
    from trainer.run_outputs.checkpointing import CheckpointError

    with pytest.raises(CheckpointError):  # the newest has no manifest: refused before Ray
        check_resume_checkpoint(cfg)


def test_shards_are_listed_through_storage(tmp_path: Path):
    from rglcd.toy.data import write_toy_dataset
    from trainer.data import parquet_columns, parquet_files

    write_toy_dataset(tmp_path, "train", 3)
    uri = f"file://{tmp_path}"
    files = parquet_files(uri)
    assert files == [storage.join(uri, "train-00000.parquet")]
    assert parquet_files(storage.join(uri, "train-*.parquet")) == files
    assert "caption" in parquet_columns(files[0])
    with pytest.raises(ValueError, match="no Parquet shards"):
        parquet_files(os.fspath(tmp_path / "empty"))


def test_direct_imagereward_runs_in_the_core_environment_and_the_package_kind_is_refused():
    from rglcd.configuration import ConfigError
    from trainer.run import validate_before_ray

    cfg = load_trainer_config("sd15-rglcd-imagereward", [], check_paths=False)
    assert cfg.serve.scorer(cfg.reward.model).kind == "imagereward-native"
    with pytest.raises(ConfigError) as err:  # the placeholder teacher and data paths
        validate_before_ray(cfg)
    assert not any("own environment" in problem for problem in err.value.problems)

    package = load_trainer_config(
        "sd15-rglcd-imagereward", ["serve.scorers.0.kind=imagereward"], check_paths=False
    )
    with pytest.raises(ConfigError) as err:
        validate_before_ray(package)
    message = str(err.value)
    assert "reward.model='imagereward' (kind 'imagereward') imports only in its own" in message
    assert "kind 'imagereward-native'" in message
    assert (RECIPES_DIR / "sd15-rglcd-lrm-imagereward.yaml").is_file()

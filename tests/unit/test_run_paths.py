"""trainer/run.py makes local paths absolute before Ray workers (another cwd) read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rglcd.recipes import RECIPES_DIR
from trainer.config import load_trainer_config
from trainer.run import absolute_paths


def test_relative_scorer_checkpoint_and_output_become_absolute(tmp_path: Path, monkeypatch):
    (tmp_path / "my-clip").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_trainer_config(
        "toy-rglcd-toy-clip",
        ["serve.scorers.1.checkpoint=my-clip", "output.dir=runs/a"],
    )
    fixed = absolute_paths(cfg)
    clip = next(s for s in fixed.serve.scorers if s.name == "toy-clip")
    assert clip.checkpoint == str(tmp_path / "my-clip")
    assert fixed.output.dir == str(tmp_path / "runs" / "a")
    assert Path(fixed.lrm.checkpoint).is_absolute()


@pytest.mark.parametrize("hub_id", ["openai/clip-vit-large-patch14", "yuvalkirstain/PickScore_v1"])
def test_hub_ids_are_left_alone(hub_id: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_trainer_config("toy-rglcd-toy-clip",
                              [f"serve.scorers.1.checkpoint={hub_id}"], check_paths=False)
    clip = next(s for s in absolute_paths(cfg).serve.scorers if s.name == "toy-clip")
    assert clip.checkpoint == hub_id


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

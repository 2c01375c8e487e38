"""Scorer registry (kinds, config errors, static facts) and the isolated ImageReward scorer.

ImageReward itself cannot run here (its package is kept out of the core environment and no
weights can be downloaded): only its lazy-import error and its runtime_env are tested.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.base import SCORER_CLASSES, Scorer, register_scorer
from reward_service.scorers.imagereward import (
    IMAGEREWARD_RUNTIME_ENV,
    imagereward_runtime_env,
    import_imagereward,
)
from reward_service.scorers.registry import build_scorer, describe_scorer, scorer_classes
from rglcd.configuration import ConfigError
from trainer.config import load_trainer_config


def test_every_kind_is_declared_by_its_scorer_class():
    classes = scorer_classes()
    assert set(classes) == {
        "toy-judge", "heldout-judge", "toy-clip", "clipscore", "pickscore", "hpsv2.1",
        "imagereward", "imagereward-native", "vlm-judge",
    }
    assert all(cls.kind == kind for kind, cls in classes.items())
    assert {k for k, cls in classes.items() if cls.differentiable} == {
        "toy-clip", "clipscore", "pickscore", "hpsv2.1", "imagereward", "imagereward-native"
    }
    assert describe_scorer(ScorerConfig(name="j", kind="toy-judge")).differentiable is False
    isolated = describe_scorer(ScorerConfig(name="i", kind="imagereward", checkpoint="/m.pt"))
    assert isolated.isolated_env and isolated.runtime_env == imagereward_runtime_env()
    assert not describe_scorer(ScorerConfig(name="c", kind="toy-clip")).isolated_env


class BrightnessScorer(Scorer):
    """A scorer a test adds: mean brightness, differentiable."""

    kind = "test-brightness"
    differentiable = True
    input_size = 8

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> BrightnessScorer:
        return cls(spec.name)


@pytest.fixture
def brightness_kind():
    register_scorer(BrightnessScorer)  # the one registration a new scorer needs
    yield BrightnessScorer.kind
    SCORER_CLASSES.pop(BrightnessScorer.kind)


def test_a_new_scorer_needs_one_registration(brightness_kind):
    spec = ScorerConfig(name="bright", kind=brightness_kind)  # the config accepts the kind
    info = describe_scorer(spec)
    assert (info.differentiable, info.input_size, info.runtime_env) == (True, 8, None)
    scorer = build_scorer(spec)
    assert scorer(torch.ones(2, 3, 8, 8), ["a", "b"]).tolist() == [1.0, 1.0]

    direct = [
        f"serve.scorers=[{{name: bright, kind: {brightness_kind}}}]",
        "reward.mode=direct", "reward.model=bright", "reward.beta=1",
    ]
    cfg = load_trainer_config(None, direct, check_paths=False)  # direct reward: differentiable
    assert cfg.reward.model == "bright"
    BrightnessScorer.differentiable = False
    try:
        with pytest.raises(ConfigError, match="gives no gradient"):
            load_trainer_config(None, direct, check_paths=False)
    finally:
        BrightnessScorer.differentiable = True


def test_describe_vlm_judge_uses_its_image_side():
    spec = ScorerConfig(name="v", kind="vlm-judge",
                        options={"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                 "image_max_side": 384})
    info = describe_scorer(spec)
    assert info.input_size == 384 and not info.differentiable


@pytest.mark.parametrize("kind", ["clipscore", "pickscore", "hpsv2.1", "imagereward"])
def test_missing_checkpoint_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="needs `checkpoint`"):
        build_scorer(ScorerConfig(name="x", kind=kind))


def test_unknown_kind_and_unknown_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown scorer kind 'aesthetic'"):
        ScorerConfig(name="x", kind="aesthetic")
    spec = ScorerConfig(name="x", kind="clipscore", checkpoint="/models/clip")
    spec.__dict__["kind"] = "aesthetic"  # bypass validation to reach the registry's own check
    with pytest.raises(ValueError, match="unknown kind 'aesthetic'"):
        build_scorer(spec)
    with pytest.raises(ValueError, match=r"unknown options \['arch'\]"):
        build_scorer(ScorerConfig(name="x", kind="clipscore", checkpoint="/m", options={"arch": 1}))


def test_clip_checkpoint_that_does_not_exist_fails_loudly(tmp_path):
    spec = ScorerConfig(name="x", kind="clipscore", checkpoint=str(tmp_path / "missing"))
    with pytest.raises(OSError):
        build_scorer(spec)


@pytest.mark.skipif(importlib.util.find_spec("ImageReward") is not None,
                    reason="image-reward is installed in this environment")
def test_imagereward_import_error_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match="IMAGEREWARD_RUNTIME_ENV") as err:
        import_imagereward()
    assert "imagereward-requirements.txt" in str(err.value)
    checkpoint = tmp_path / "ImageReward.pt"
    checkpoint.write_bytes(b"weights")
    (tmp_path / "med_config.json").write_text("{}")
    spec = ScorerConfig(name="ir", kind="imagereward", checkpoint=str(checkpoint), device="cpu")
    with pytest.raises(ImportError, match="isolated virtualenv"):
        build_scorer(spec)


def test_imagereward_missing_files_are_reported_before_import(tmp_path):
    spec = ScorerConfig(name="ir", kind="imagereward", checkpoint=str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="THUDM/ImageReward"):
        build_scorer(spec)
    (tmp_path / "x.pt").write_bytes(b"weights")
    with pytest.raises(ValueError, match="med_config"):
        build_scorer(spec)


def test_imagereward_runtime_env_pins(monkeypatch):
    monkeypatch.delenv("RGLCD_IMAGEREWARD_PYTHON", raising=False)
    env = imagereward_runtime_env()
    packages = env["pip"]["packages"]
    # Every package pinned: transformers 4.46.3 (4.57 lacks what image-reward's BLIP imports),
    # a diffusers that imports beside it, setuptools that keeps pkg_resources but not below
    # torch 2.14's floor (pip would reinstall an older torch). `rglcd-rehearse` runs it.
    pins = dict(p.split("==") for p in packages if "==" in p)
    assert pins["image-reward"] == "1.5" and pins["transformers"] == "4.46.3"
    assert pins["diffusers"] == "0.31.0" and "clip-anytorch" in pins
    assert "setuptools>=77.0.3,<81" in packages and len(pins) == len(packages) - 1
    assert env["env_vars"] == {"HF_HUB_OFFLINE": "1"}
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of the runtime_env the deployment gets
    env["pip"]["packages"].append("mutated")  # callers get a copy
    assert "mutated" not in IMAGEREWARD_RUNTIME_ENV["pip"]["packages"]


def test_a_prebuilt_imagereward_environment_is_used_instead_of_pip(monkeypatch, tmp_path):
    from ray.runtime_env import RuntimeEnv

    python = tmp_path / "imagereward-venv" / "bin" / "python"
    monkeypatch.setenv("RGLCD_IMAGEREWARD_PYTHON", str(python))
    with pytest.raises(ValueError, match="is not a file"):
        imagereward_runtime_env()
    python.parent.mkdir(parents=True)
    python.write_text("")
    env = imagereward_runtime_env()
    assert env == {"py_executable": str(python), "env_vars": {"HF_HUB_OFFLINE": "1"}}
    RuntimeEnv(**env)


def test_an_unset_batch_size_is_the_kinds_default():
    from reward_service.config import ScorerConfig
    from reward_service.scorers.registry import scorer_classes

    for kind, cls in scorer_classes().items():
        spec = ScorerConfig(name=kind, kind=kind, checkpoint="x" if cls.needs_checkpoint else None)
        assert spec.max_batch_size == cls.default_batch_size
    assert ScorerConfig(name="j", kind="toy-judge").max_batch_size == 32  # cheap rule-based judge
    assert ScorerConfig(name="v", kind="vlm-judge").max_batch_size == 8  # remote call per item
    assert ScorerConfig(name="j", kind="toy-judge", max_batch_size=4).max_batch_size == 4

"""rglcd-plan: the committed architectures are the public models, and the plan's numbers are
the trainer's (no Ray; the plan's steps take 10-20 s each, hence `slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from orchestration.capacity import plan as plan_module
from orchestration.capacity.architectures import ARCH_ROOT, build_parts, recipe_archs
from orchestration.capacity.step import measure_step, worker_models
from orchestration.commands import plan as plan_command
from trainer.config import load_trainer_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Parameter counts of the public checkpoints (diffusers / transformers / open_clip).
PUBLIC_COUNTS = {
    ("sd15", "unet"): 859_520_964,
    ("sd21", "unet"): 865_910_724,
    ("sdxl", "unet"): 2_567_463_684,
    ("sd15", "vae"): 83_653_863,
    ("sd15", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text
    ("sd21", "text_encoder"): 340_387_840,  # OpenCLIP ViT-H/14 text, 23 of 24 layers
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP ViT-bigG/14 text + projection
    ("experts", "hpsv2.1"): 986_109_441,  # open_clip ViT-H-14
}


def _build(folder: str, name: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    config = json.loads((ARCH_ROOT / folder / f"{name}.json").read_text())
    if name == "unet":
        return UNet2DConditionModel.from_config(config)
    if name == "vae":
        return AutoencoderKL.from_config(config)
    if folder == "experts":
        return CLIPModel(CLIPConfig.from_dict(config))
    cls = CLIPTextModelWithProjection if name.endswith("_2") else CLIPTextModel
    return cls(CLIPTextConfig.from_dict(config))


@pytest.mark.parametrize(("folder", "name"), sorted(PUBLIC_COUNTS))
def test_committed_configs_are_the_public_architectures(folder, name):
    with torch.device("meta"):
        model = _build(folder, name)
    assert sum(p.numel() for p in model.parameters()) == PUBLIC_COUNTS[folder, name]


def _toy(*overrides: str):
    return load_trainer_config(CONFIGS / "toy-rglcd-lrm-toy-judge.yaml", ["model.mixed_precision=bf16", *overrides],
                               check_paths=False)


@pytest.mark.slow  # a training step of the toy recipe, measured op by op
def test_the_step_measured_on_fake_tensors_equals_the_real_one():
    """The same step with real weights and real tensors allocates the same bytes (to 0.1%: a
    few kernels size a small output, e.g. attention's log-sum-exp, differently from their
    shape-only versions) and the same FLOPs."""
    cfg = _toy("lcd.global_batch_size=4", "lrm.batch_size=2")
    torch.manual_seed(0)
    real = measure_step(worker_models(build_parts(recipe_archs(cfg)), cfg), cfg, 4)
    with FakeTensorMode():
        fake = measure_step(worker_models(build_parts(recipe_archs(cfg)), cfg), cfg, 4)
    assert fake.peak_bytes == pytest.approx(real.peak_bytes, rel=1e-3)
    assert fake.flops == real.flops
    assert fake.grad_bytes_at_peak == real.grad_bytes_at_peak


@pytest.mark.slow  # a training step of the toy recipe, measured op by op
def test_the_plan_counts_the_trainers_weights_and_optimizer_state():
    cfg = _toy()
    plan = plan_module.plan_recipe(cfg, device_type="cpu")
    parts = build_parts(recipe_archs(cfg))
    models = worker_models(parts, cfg)
    size = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert plan.lines["student weights"] == size(models.student)
    assert plan.lines["teacher UNet (frozen)"] == size(parts.unet)
    assert plan.lines["optimizer state"] == 2 * size(models.student)  # AdamW: 2 fp32 moments
    lrm_trainable = sum(p.numel() for p in parts.lrm.parameters() if p.requires_grad)
    assert plan.lines["LRM optimizer state"] == 8 * lrm_trainable
    assert "DDP gradient buckets" not in plan.lines  # one worker
    assert plan.step.flops > 0 and plan.per_sample_bytes > 0


@pytest.mark.slow  # a training step of the toy recipe, measured op by op
def test_a_recipe_that_does_not_fit_is_refused_with_the_numbers(monkeypatch, capsys):
    tiny = plan_module.GPU("tiny", 64 * 2**20, 1e12, reserve_bytes=0)
    monkeypatch.setitem(plan_module.GPUS, "tiny", tiny)
    assert plan_command.main(["--config", str(CONFIGS / "toy-lcd.yaml"), "--gpu", "tiny"]) == 1
    out, err = capsys.readouterr()
    assert "DOES NOT FIT" in out and "FLOPs per step" in out
    assert "GiB per GPU but a tiny has" in err and "model.gradient_checkpointing=true" in err

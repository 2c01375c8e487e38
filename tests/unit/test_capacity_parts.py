"""The capacity plan's pure parts: live-bytes tracking, fit arithmetic, recipe -> architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestration.capacity.architectures import recipe_archs
from orchestration.capacity.plan import GIB, GPUS, CapacityPlan
from orchestration.capacity.step import StepMeasurement
from orchestration.capacity.tracking import LiveBytes
from trainer.config import load_trainer_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _recipe(name: str, *overrides: str):
    return load_trainer_config(CONFIGS / name, list(overrides), check_paths=False)


def test_live_bytes_counts_each_storage_once_until_it_dies():
    x = torch.ones(1000)  # made before the mode: not counted
    with LiveBytes() as tracker:
        y = x * 2  # 4000 bytes
        view = y[:10]  # a view shares y's storage
        z = y + 1  # 4000 more: peak 8000
        del y, z
        w = view * 1  # y's storage lives on through the view; z's is gone
    assert tracker.peak == 8000
    assert tracker.live == 4000 + 40
    assert tracker.peak_bytes_of([view]) == 4000 and tracker.peak_bytes_of([w]) == 0


def test_saved_activations_stay_alive_until_backward():
    weight = torch.randn(64, 64, requires_grad=True)
    with LiveBytes() as tracker:
        hidden = torch.randn(8, 64) @ weight  # the input is saved for weight's gradient
        loss = hidden.relu().sum()  # relu's output is saved too
        del hidden
        before = tracker.live
        loss.backward()
    assert before >= 2 * 8 * 64 * 4
    assert tracker.live < before + weight.numel() * 4  # the saved tensors went, the grad came


def _plan(static_gib: float, step_gib: float, per_sample_gib: float, batch: int = 4):
    step = StepMeasurement(batch, int(step_gib * GIB), 0, 10**12, int(step_gib * GIB))
    return CapacityPlan("r", "sd15", batch, 512, {"weights": int(static_gib * GIB)}, step,
                        int(step_gib * GIB), per_sample_bytes=int(per_sample_gib * GIB))


def test_fit_largest_batch_and_step_time():
    gpu = GPUS["a100-80"]
    plan = _plan(30, 20, 4)  # 50 GiB at batch 4, 4 GiB per sample more
    assert plan.fits(gpu) and gpu.usable_bytes / GIB == pytest.approx(74.6, abs=0.1)
    assert plan.largest_batch(gpu) == 4 + int((gpu.usable_bytes - 50 * GIB) // (4 * GIB))
    assert not _plan(60, 20, 4).fits(gpu) and _plan(60, 20, 4).largest_batch(gpu) == 2
    assert _plan(80, 1, 1).largest_batch(gpu) == 0
    assert plan.step_seconds(gpu, 0.5) == pytest.approx(1e12 / (312e12 * 0.5))


def test_recipes_map_to_their_committed_architectures():
    sd15 = recipe_archs(_recipe("sd15-rglcd-lrm-hpsv2.1.yaml"))
    assert sd15.name == "sd15" and sd15.unet["cross_attention_dim"] == 768
    assert sd15.lrm["latent"]["width"] == 512 and sd15.expert is None  # the expert is served
    sd21v = recipe_archs(_recipe("sd21v-lcd.yaml"))
    assert sd21v.unet["sample_size"] == 96 and sd21v.text_encoders[0]["hidden_size"] == 1024
    sdxl = recipe_archs(_recipe("sdxl-rglcd-lora-hpsv2.1.yaml"))
    assert [e["hidden_size"] for e in sdxl.text_encoders] == [768, 1280]
    assert sdxl.expert["vision_config"]["hidden_size"] == 1280  # HPSv2.1's ViT-H-14, in-worker
    toy = recipe_archs(_recipe("toy-rglcd-lrm-toy-judge.yaml"))  # a local pipeline folder: its own configs
    assert toy.name == "pipeline" and toy.unet["block_out_channels"]


def test_an_unknown_hub_teacher_says_what_to_pass():
    with pytest.raises(ValueError, match="local diffusers pipeline folder"):
        recipe_archs(_recipe("sd15-lcd.yaml", "model.teacher=someone/some-model"))


def test_views_of_existing_weights_are_no_new_memory():
    weight = torch.randn(256, 256, requires_grad=True)
    with LiveBytes() as tracker:
        tracker.ignore([weight])
        out = torch.randn(4, 256) @ weight.t()  # the transposed weight is saved: an alias
        alias = weight.detach()
    assert tracker.peak == 2 * 4 * 256 * 4  # the input and the output only
    del out, alias

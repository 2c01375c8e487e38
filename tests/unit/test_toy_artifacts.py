"""The committed toy artifacts load offline with the stock classes and do their jobs."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from safetensors import safe_open
from transformers import AutoTokenizer, CLIPModel

from rglcd.toy.judge import ToyJudge
from rglcd.toy.miniclip import PREPROCESS_FILE, image_features, load_miniclip, text_features
from rglcd.toy.paths import TOY_ARTIFACTS, TOY_MINICLIP_DIR, TOY_PIPELINE_DIR
from rglcd.toy.scenes import HELD_OUT_COMBOS, caption_for


@pytest.fixture(scope="module")
def teacher():
    pipe = StableDiffusionPipeline.from_pretrained(TOY_PIPELINE_DIR, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_folder_is_a_standard_sd_pipeline(teacher):
    assert type(DiffusionPipeline.from_pretrained(TOY_PIPELINE_DIR)) is StableDiffusionPipeline
    assert teacher.scheduler.config.prediction_type == "epsilon"
    assert teacher.scheduler.config.beta_schedule == "scaled_linear"
    assert teacher.safety_checker is None
    assert 0.05 < teacher.vae.config.scaling_factor < 5.0
    assert teacher.unet.config.cross_attention_dim == teacher.text_encoder.config.hidden_size


def test_teacher_text_encoder_is_the_miniclip_text_tower(teacher):
    clip = CLIPModel.from_pretrained(TOY_MINICLIP_DIR, dtype=torch.float32)
    for name, weight in clip.text_model.state_dict().items():
        torch.testing.assert_close(teacher.text_encoder.state_dict()[name], weight)


def test_teacher_draws_held_out_prompts_in_the_right_colour(teacher):
    prompts = [caption_for("large", *combo) for combo in HELD_OUT_COMBOS[:4]]
    images = teacher(prompts, num_inference_steps=50, guidance_scale=7.5, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (4, 3, 32, 32)
    summary = ToyJudge().summary(images, prompts)
    assert summary["colour_accuracy"] >= 0.75 and summary["bg_accuracy"] >= 0.75


def test_miniclip_loads_offline_and_prefers_the_true_caption():
    model, tokenizer = load_miniclip(TOY_MINICLIP_DIR)
    assert type(AutoTokenizer.from_pretrained(TOY_MINICLIP_DIR)).__name__.startswith("CLIPTokenizer")
    assert json.loads((TOY_MINICLIP_DIR / PREPROCESS_FILE).read_text())["image_size"] == 32
    assert tokenizer.tokenize("a small red circle on a blue background") == [
        "a</w>", "small</w>", "red</w>", "circle</w>", "on</w>", "a</w>", "blue</w>",
        "background</w>"]
    red = torch.zeros(1, 3, 32, 32)
    red[:, :] = torch.tensor([40, 70, 220]).view(1, 3, 1, 1) / 255  # blue background
    red[:, :, 8:24, 8:24] = torch.tensor([220, 40, 40]).view(1, 3, 1, 1) / 255
    with torch.no_grad():
        sims = image_features(model, red) @ text_features(model, tokenizer, [
            "a large red square on a blue background",
            "a large green circle on a white background"]).T
    assert sims[0, 0] > sims[0, 1]


def test_reward_clip_prefers_the_true_picture_to_its_hard_negatives():
    """The committed reward CLIP ranks a clean held-out scene above a smudged copy far more
    often than the mini CLIP it was fine-tuned from, and still sees the captioned attributes."""
    from orchestration.toy_build.reward_clip_stage import held_out_negatives, true_over
    from rglcd.toy.paths import TOY_REWARD_CLIP_DIR
    from rglcd.toy.scenes import render, sample_scenes

    scenes = sample_scenes("heldout", 300, seed=3)
    images = torch.from_numpy(np.stack([render(s) for s in scenes])).float().div(255)
    images, captions = images.permute(0, 3, 1, 2), [s.caption for s in scenes]
    negatives = held_out_negatives(images, captions, seed=0)
    reward = true_over(*load_miniclip(TOY_REWARD_CLIP_DIR), images, negatives, captions)
    source = true_over(*load_miniclip(TOY_MINICLIP_DIR), images, negatives, captions)
    assert reward["degraded"] > 0.93 and reward["degraded"] > source["degraded"] + 0.15
    assert min(reward["shape_swap"], reward["size_swap"], reward["colour_swap"]) > 0.85


def test_artifacts_are_fp16_and_small():
    files = [p for p in TOY_ARTIFACTS.rglob("*.safetensors")]
    assert files
    total_mb = sum(p.stat().st_size for p in TOY_ARTIFACTS.rglob("*") if p.is_file()) / 2**20
    assert total_mb < 25
    for path in files:
        with safe_open(path, framework="pt") as f:
            assert all(f.get_slice(k).get_dtype() in ("F16", "I64") for k in f.keys()), path


def test_toy_lrm_sees_every_attribute_of_held_out_scenes(teacher):
    """The committed LRM ranks captions that differ in one attribute only (shape is the hard
    one: an LRM blind to it steers the student's small crosses into blobs)."""
    import numpy as np

    from rglcd.toy.paths import TOY_LRM_DIR
    from rglcd.toy.scenes import all_captions, parse_caption, render, sample_scenes
    from trainer.lrm import LatentRewardModel
    from trainer.lrm.pretrain import evaluate_retrieval, prepare_split

    scenes = sample_scenes("heldout", 128, seed=7)
    lrm = LatentRewardModel.from_pretrained(TOY_LRM_DIR).eval()
    data = prepare_split(teacher.vae, lrm.tokenizer, np.stack([render(s) for s in scenes]),
                         [s.caption for s in scenes], sample=False, caption_bank=all_captions())
    accuracy = evaluate_retrieval(lrm, data, attributes=parse_caption)
    assert accuracy["shape_accuracy"] >= 0.8, accuracy  # 0.38 for the first, 600-step LRM
    assert min(accuracy["colour_accuracy"], accuracy["size_accuracy"], accuracy["bg_accuracy"]) >= 0.95

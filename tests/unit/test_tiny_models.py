"""The tiny SD teacher: shapes, determinism, schedules, and an offline pipeline round trip."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline

from rglcd.tiny_models import (
    save_tiny_sd_pipeline,
    tiny_scheduler,
    tiny_sd_components,
    tiny_tokenizer,
)
from trainer.lcd import scaled_linear_alphas_cumprod


def test_components_shapes_and_determinism():
    a = tiny_sd_components("epsilon", seed=0)
    b = tiny_sd_components("epsilon", seed=0)
    c = tiny_sd_components("epsilon", seed=1)
    for name in ["unet", "vae", "text_encoder"]:
        sa, sb, sc = a[name].state_dict(), b[name].state_dict(), c[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert any(not torch.equal(sa[k], sc[k]) for k in sa), name
    assert sum(p.numel() for p in a["unet"].parameters()) < 2_000_000

    ids = a["tokenizer"](
        ["a red circle on the floor", ""],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        text = a["text_encoder"](ids)[0]
        image = a["vae"].decode(torch.randn(2, 4, 8, 8)).sample
        latents = a["vae"].encode(image).latent_dist.sample()
        out = a["unet"](latents, torch.tensor([1, 999]), encoder_hidden_states=text).sample
    assert text.shape == (2, 77, 32)
    assert image.shape == (2, 3, 16, 16) and latents.shape == (2, 4, 8, 8)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_tokenizer_round_trip_without_download():
    tok = tiny_tokenizer()
    ids = tok("A Red  circle on the floor").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "a red circle on the floor"
    assert max(ids) < len(tok)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_schedulers_use_sd_schedule(prediction_type):
    ddim, ddpm = tiny_scheduler("ddim", prediction_type), tiny_scheduler("ddpm", prediction_type)
    assert isinstance(ddim, DDIMScheduler) and isinstance(ddpm, DDPMScheduler)
    for sched in (ddim, ddpm):
        assert sched.config.prediction_type == prediction_type
        assert torch.equal(sched.alphas_cumprod, scaled_linear_alphas_cumprod(1000, 0.00085, 0.012))
    with pytest.raises(ValueError, match="prediction_type"):
        tiny_scheduler("ddim", "flow")
    euler = tiny_scheduler("euler", prediction_type)  # what the tiny SDXL teacher ships
    assert euler.config.prediction_type == prediction_type
    assert torch.equal(euler.alphas_cumprod, scaled_linear_alphas_cumprod(1000, 0.00085, 0.012))
    with pytest.raises(ValueError, match="kind"):
        tiny_scheduler("pndm", prediction_type)


def test_saved_pipeline_loads_offline(tmp_path):
    path = save_tiny_sd_pipeline(tmp_path / "sd", prediction_type="v_prediction", seed=0)
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    ref = tiny_sd_components("v_prediction", seed=0)["unet"].state_dict()
    loaded = pipe.unet.state_dict()
    assert all(torch.equal(ref[k], loaded[k]) for k in ref)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red circle",
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 16, 16, 3)

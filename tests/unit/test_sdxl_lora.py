"""SDXL as LCM-LoRA (paper appendix D) on a tiny SDXL-shaped teacher saved to disk.

Training goes through the trainer's own `Trainer` (teacher loading, task, optimizer), in
process, without Ray; the exported adapters load into a fresh diffusers pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import (
    DiffusionPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from rglcd.configuration import ConfigError
from rglcd.tiny_models import save_tiny_sd_pipeline, save_tiny_sdxl_pipeline
from tests.helpers.lcd_reference import lcd_loss
from trainer.conditioning import encode_text, encode_uncond
from trainer.config import RGLCDConfig, load_trainer_config
from trainer.data import LocalBatch
from trainer.lcd import AdaptersDisabled, lora_state_dict
from trainer.loop import Trainer, train_state
from trainer.models import check_teacher_source
from trainer.run_outputs.checkpointing import DataPosition, load_checkpoint, save_checkpoint
from trainer.run_outputs.export import export_fused_lora_pipeline
from trainer.run_outputs.layout import LORA_SUBDIR

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CAPTIONS = ["a small red circle", "a large blue square", "a green cross", "a triangle"]
RANK, ALPHA = 4, 8.0  # alpha != rank: the exported scale must survive the round trip
STEPS = 3


def make_batch(step: int, size: int = 4) -> LocalBatch:
    generator = torch.Generator().manual_seed(step)
    return LocalBatch(
        latents=torch.randn(size, 4, 8, 8, generator=generator),
        captions=CAPTIONS[:size],
        sample_keys=torch.arange(size, dtype=torch.int64) * 7919 + step,
        position=DataPosition(0, step + 1),
    )


def lora_config(teacher, run_dir, family="sdxl", **model) -> RGLCDConfig:
    return RGLCDConfig.model_validate(
        {
            "model": {
                "teacher": str(teacher),
                "family": family,
                "lora": {"rank": RANK, "alpha": ALPHA},
                "resolution": 16,
                **model,
            },
            "lcd": {"learning_rate": 1e-3},
            "output": {"dir": str(run_dir)},
        }
    )


def base_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in unet.state_dict().items() if ".lora_" not in k}


@pytest.fixture(scope="module")
def sdxl_teacher(tmp_path_factory):
    return save_tiny_sdxl_pipeline(tmp_path_factory.mktemp("teacher") / "sdxl")


@pytest.fixture(scope="module")
def trained(sdxl_teacher, tmp_path_factory):
    """A Trainer after STEPS LCM-LoRA steps, with the weights from before training."""
    torch.manual_seed(0)
    trainer = Trainer(lora_config(sdxl_teacher, tmp_path_factory.mktemp("run")), 0, 1,
                      torch.device("cpu"))
    unet = trainer.task.student
    before = {"base": base_weights(unet), "lora": lora_state_dict(unet)}
    before["lora"] = {k: v.clone() for k, v in before["lora"].items()}
    metrics = [trainer.train_step(make_batch(step), step) for step in range(STEPS)]
    return trainer, before, metrics


def unet_output(unet, seed: int = 0) -> torch.Tensor:
    """One SDXL UNet call on fixed random inputs (2 samples)."""
    g = torch.Generator().manual_seed(seed)
    z, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)
    added = {"text_embeds": torch.randn(2, 32, generator=g),
             "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]] * 2)}
    with torch.no_grad():
        return unet(z, torch.tensor([999, 259]), encoder_hidden_states=text,
                    added_cond_kwargs=added).sample


def lcm_sample(pipe, steps: int = 2) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe("a small red circle", num_inference_steps=steps, guidance_scale=1.0,
                height=16, width=16, generator=torch.Generator().manual_seed(0),
                output_type="pt").images


def test_lora_steps_train_only_the_adapters(sdxl_teacher, trained):
    trainer, before, metrics = trained
    task, unet = trainer.task, trainer.task.student
    assert task.is_lora and task.target is None and task.target_net is unet
    assert unet is task.teacher.unet  # one UNet: the teacher is the student, adapters off
    assert unet.config.time_cond_proj_dim is None  # LCM-LoRA: no w-embedding
    for row in metrics:
        assert torch.isfinite(torch.tensor(row["loss"])) and row["loss"] > 0
        assert row["grad_norm"] > 0
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable == set(before["lora"]) and trainable  # adapters back on after the teacher
    after = base_weights(unet)
    assert all(torch.equal(after[k], v) for k, v in before["base"].items()), "base changed"
    lora_after = lora_state_dict(unet)
    changed = [k for k, v in before["lora"].items() if not torch.equal(lora_after[k], v)]
    assert len(changed) == len(before["lora"])
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(task.teacher, name)
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    # The teacher (adapters off) is still exactly the pretrained UNet; the student is not.
    pretrained = UNet2DConditionModel.from_pretrained(sdxl_teacher / "unet")
    torch.testing.assert_close(unet_output(task.teacher_unet), unet_output(pretrained),
                               rtol=0, atol=0)
    assert (unet_output(unet) - unet_output(pretrained)).abs().max() > 1e-5


def test_task_step_equals_the_reference_lcd_loss(trained):
    """The task's stages compute exactly lcd_loss with teacher = student with adapters off and
    target = the student itself (no EMA network)."""
    task = trained[0].task
    batch = make_batch(step=7)
    loss, _ = task.step(batch, step=7)
    index, w, noise = task.draw(batch.sample_keys, 7, batch.latents.shape[1:])
    cond = encode_text(task.teacher, batch.captions).with_time_ids((16, 16))
    uncond = task.uncond.with_time_ids((16, 16))
    expected = lcd_loss(
        task.student, task.student, AdaptersDisabled(task.student), batch.latents, noise, index,
        w, cond.hidden_states, uncond.hidden_states, task.grid, task.alphas_cumprod, "epsilon",
        cond_added=cond.added, uncond_added=uncond.added,
    )
    torch.testing.assert_close(loss, expected.loss, rtol=0, atol=0)


def test_sdxl_conditioning_matches_the_diffusers_pipeline(sdxl_teacher, trained):
    teacher = trained[0].task.teacher
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_teacher)
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        CAPTIONS[:2], device="cpu", do_classifier_free_guidance=True
    )
    ours = encode_text(teacher, CAPTIONS[:2]).with_time_ids((16, 16))
    torch.testing.assert_close(ours.hidden_states, embeds)
    torch.testing.assert_close(ours.text_embeds, pooled)
    time_ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), torch.float32, 32)
    torch.testing.assert_close(ours.time_ids, time_ids.expand(2, 6))
    uncond = encode_uncond(teacher)  # force_zeros_for_empty_prompt, as the pipeline does
    assert teacher.force_zeros_for_empty_prompt and not neg.any() and not neg_pooled.any()
    assert not uncond.hidden_states.any() and not uncond.text_embeds.any()
    assert uncond.hidden_states.shape == (1, 77, 64) and uncond.text_embeds.shape == (1, 32)


def test_exported_adapters_load_in_a_fresh_pipeline(sdxl_teacher, trained):
    trainer = trained[0]
    folder = Path(trainer.export())
    assert folder == Path(trainer.output_dir) / LORA_SUBDIR
    assert (folder / "pytorch_lora_weights.safetensors").is_file()

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_teacher)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    plain = lcm_sample(pipe)
    pipe.load_lora_weights(folder)
    with_lora = lcm_sample(pipe)
    assert plain.shape == with_lora.shape == (1, 3, 16, 16)
    assert torch.isfinite(with_lora).all()
    assert (with_lora - plain).abs().max() > 1e-4, "the loaded LoRA does not change the output"
    # exact round trip: rank, alpha (scale alpha / rank) and weights as trained
    torch.testing.assert_close(unet_output(pipe.unet), unet_output(trainer.task.student))


def test_fused_pipeline_export_equals_the_loaded_adapters(sdxl_teacher, trained, tmp_path):
    trainer = trained[0]
    adapters = trainer.export()
    fused_dir = export_fused_lora_pipeline(adapters, sdxl_teacher, tmp_path / "fused", "sdxl")
    fused = DiffusionPipeline.from_pretrained(fused_dir)
    assert isinstance(fused, StableDiffusionXLPipeline)
    assert isinstance(fused.scheduler, LCMScheduler)
    assert not getattr(fused.unet, "peft_config", None)  # plain weights, no adapters
    torch.testing.assert_close(
        unet_output(fused.unet), unet_output(trainer.task.student), rtol=1e-4, atol=1e-5
    )
    assert torch.isfinite(lcm_sample(fused, steps=4)).all()


def test_lora_checkpoint_holds_only_the_adapters(sdxl_teacher, trained, tmp_path):
    trainer = trained[0]
    trainer.state.step = STEPS
    path = save_checkpoint(tmp_path / "ckpt", trainer.state)
    modules = sorted(p.name for p in (path / "modules").iterdir())
    assert modules == ["student.lora.safetensors"]  # no EMA target, no frozen base weights

    torch.manual_seed(1)  # a different adapter init, overwritten by the checkpoint
    fresh = Trainer(lora_config(sdxl_teacher, tmp_path / "run2"), 0, 1, torch.device("cpu"))
    state = load_checkpoint(path, train_state(fresh.cfg, fresh.task, fresh.optimizer),
                            restore_rng=False)
    assert state.step == STEPS
    saved, loaded = lora_state_dict(trainer.task.student), lora_state_dict(fresh.task.student)
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert fresh.optimizer.state_dict()["state"], "optimizer moments were not restored"


def test_sample_grid_of_the_lora_student(trained):
    trainer = trained[0]
    path = trainer.write_samples(step=STEPS)
    assert path is not None and Path(path).stat().st_size > 0


def test_sd_family_lora_trains_and_exports(tmp_path):
    """LoRA is allowed for SD1.x/2.x teachers too (LCM-LoRA SD1.5): same path, SD pipeline."""
    teacher = save_tiny_sd_pipeline(tmp_path / "sd", prediction_type="v_prediction")
    trainer = Trainer(lora_config(teacher, tmp_path / "run", family="sd"), 0, 1,
                      torch.device("cpu"))
    assert trainer.task.uncond.text_embeds is None  # SD: the encoded "" prompt
    before = lora_state_dict(trainer.task.student)
    before = {k: v.clone() for k, v in before.items()}
    metrics = trainer.train_step(make_batch(0), 0)
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    after = lora_state_dict(trainer.task.student)
    assert any(not torch.equal(after[k], v) for k, v in before.items())
    folder = trainer.export()
    pipe = StableDiffusionPipeline.from_pretrained(teacher, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.load_lora_weights(folder)
    g = torch.Generator().manual_seed(0)
    z, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        loaded = pipe.unet(z, torch.tensor([499]), encoder_hidden_states=text).sample
        trained_out = trainer.task.student(z, torch.tensor([499]), encoder_hidden_states=text)
    torch.testing.assert_close(loaded, trained_out.sample)


def test_config_and_teacher_validation(sdxl_teacher, tmp_path):
    with pytest.raises(ConfigError, match="model.family=sdxl needs model.lora"):
        load_trainer_config(None, ["model.family=sdxl"], check_paths=False)
    with pytest.raises(ConfigError, match="model.lora.rank"):
        load_trainer_config(None, ["model.lora.rank=0"], check_paths=False)
    cfg = load_trainer_config(None, ["model.family=sdxl", "model.lora.rank=8"], check_paths=False)
    assert cfg.model.lora.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    assert cfg.model.lora.alpha == 64.0

    # The folder's UNet says which family it is; a mismatch names the fix.
    with pytest.raises(ValueError, match="set model.family=sdxl"):
        check_teacher_source(str(sdxl_teacher), family="sd")
    sd = save_tiny_sd_pipeline(tmp_path / "sd")
    with pytest.raises(ValueError, match="set model.family=sd"):
        check_teacher_source(str(sd), family="sdxl")  # also lacks text_encoder_2/ -> caught
    assert check_teacher_source(str(sdxl_teacher), family="sdxl") == "epsilon"

    bad = lora_config(sdxl_teacher, tmp_path / "run", lora={"rank": 4,
                                                            "target_modules": ["no_such_layer"]})
    with pytest.raises(ValueError, match="model.lora.target_modules"):
        Trainer(bad, 0, 1, torch.device("cpu"))


def test_rg_lcm_lora_with_a_direct_reward_trains_only_the_adapters(sdxl_teacher, tmp_path):
    """configs/sdxl-rglcd-lora-hpsv2.1.yaml in miniature: LCM-LoRA + the direct reward (eq. 11)."""
    recipe = load_trainer_config(CONFIGS / "sdxl-rglcd-lora-hpsv2.1.yaml", [], check_paths=False)
    assert recipe.model.lora and recipe.reward.mode == "direct" and recipe.reward.beta == 1.0
    cfg = lora_config(sdxl_teacher, tmp_path / "run").model_copy(
        update={"reward": recipe.reward.model_copy(update={"model": "toy-clip"})}
    )
    cfg = RGLCDConfig.model_validate(cfg.model_dump())  # cross-field checks on the mix
    torch.manual_seed(0)
    trainer = Trainer(cfg, 0, 1, torch.device("cpu"))
    base = base_weights(trainer.task.student)
    metrics = [trainer.train_step(make_batch(step), step) for step in range(2)]
    for m in metrics:  # the loss holds the reward term, beta = 1
        assert m["loss"] == pytest.approx(m["lcd_loss"] - m["reward_mean"], rel=1e-4, abs=1e-6)
    after = base_weights(trainer.task.student)
    assert all(torch.equal(base[k], after[k]) for k in base)

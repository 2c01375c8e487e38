"""Student construction, the guided teacher step and one LCD step on the tiny teacher."""

import copy

import pytest
import torch
from diffusers import DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler

from rglcd.tiny_models import tiny_sd_components
from tests.helpers.lcd_reference import lcd_loss
from trainer.lcd import (
    build_student_unet,
    ddim_grid,
    ema_update_,
    guided_teacher_step,
    lcm_sample_unet,
)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def parts(request):
    return tiny_sd_components(prediction_type=request.param, seed=0)


def _embeds(parts, prompts):
    tok = parts["tokenizer"]
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return parts["text_encoder"](ids.input_ids)[0]  # (B, 77, 32)


def test_student_equals_teacher_with_zero_cond(parts):
    teacher = parts["unet"]
    student = build_student_unet(teacher, 256)
    assert student.config.time_cond_proj_dim == 256
    assert student.time_embedding.cond_proj.weight.shape == (
        teacher.config.block_out_channels[0],
        256,
    )
    assert student.training and all(p.requires_grad for p in student.parameters())
    torch.manual_seed(0)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([999, 20])
    c = torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = teacher(z, t, encoder_hidden_states=c).sample
        ours = student.eval()(z, t, encoder_hidden_states=c, timestep_cond=torch.zeros(2, 256))
        other = student(z, t, encoder_hidden_states=c, timestep_cond=torch.ones(2, 256))
    assert torch.equal(ours.sample, ref)
    assert (other.sample - ref).abs().max() > 1e-4  # the w input is wired in
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        build_student_unet(student, 128)


def test_guided_teacher_step_matches_ddim_scheduler(parts):
    """z_e = (1+w) DDIM(z, c) - w DDIM(z, empty) with diffusers' DDIM (eq. 9)."""
    teacher, ptype = parts["unet"], parts["scheduler"].config.prediction_type
    sched = DDIMScheduler.from_config(parts["scheduler"].config, set_alpha_to_one=False)
    sched.set_timesteps(50)
    abar = sched.alphas_cumprod
    grid = ddim_grid(abar, 50)
    cond, uncond = _embeds(parts, ["a red circle", "a blue cross"]), _embeds(parts, [""])
    w = torch.tensor([0.0, 6.5])
    torch.manual_seed(1)
    z = torch.randn(2, 4, 8, 8)
    for n in [0, 30]:
        index = torch.tensor([n, n])
        t_s = grid.timesteps[index]
        ours = guided_teacher_step(
            teacher, z, t_s, grid.abar_prev[index], cond, uncond, w, abar, ptype
        )
        with torch.no_grad():
            out_c = teacher(z, t_s, encoder_hidden_states=cond).sample
            out_u = teacher(z, t_s, encoder_hidden_states=uncond.expand(2, -1, -1)).sample
        step_c = sched.step(out_c, int(t_s[0]), z).prev_sample
        step_u = sched.step(out_u, int(t_s[0]), z).prev_sample
        ref = (1 + w.view(-1, 1, 1, 1)) * step_c - w.view(-1, 1, 1, 1) * step_u
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_lcd_step_grads_and_ema(parts):
    teacher, ptype = parts["unet"], parts["scheduler"].config.prediction_type
    student = build_student_unet(teacher, 256)
    target = copy.deepcopy(student)  # teacher and target keep requires_grad=True on purpose
    abar = parts["noise_scheduler"].alphas_cumprod
    grid = ddim_grid(abar, 50)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    cond, uncond = _embeds(parts, ["a red circle", "a blue cross"]), _embeds(parts, [""])
    args = (latents, noise, torch.tensor([0, 37]), torch.tensor([5.0, 12.0]), cond, uncond)
    out = lcd_loss(student, target, teacher, *args, grid, abar, ptype)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss > 0
    with torch.no_grad():  # seeded inputs -> the same loss; "l2" selects another distance
        again = lcd_loss(student, target, teacher, *args, grid, abar, ptype)
        l2 = lcd_loss(student, target, teacher, *args, grid, abar, ptype, loss_type="l2")
    assert again.loss == out.loss
    torch.testing.assert_close(l2.loss, ((out.online - out.target) ** 2).mean())
    assert out.t_start.tolist() == [19, 759] and out.t_end.tolist() == [0, 739]
    assert out.online.requires_grad and not out.target.requires_grad
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in target.parameters())
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert student.time_embedding.cond_proj.weight.grad.abs().sum() > 0

    torch.optim.SGD(student.parameters(), lr=0.1).step()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update_(target, student, mu=0.95)
    online = student.state_dict()
    for name, value in target.state_dict().items():
        expected = 0.95 * before[name] + 0.05 * online[name]
        torch.testing.assert_close(value, expected, atol=1e-7, rtol=1e-6)
    assert (target.state_dict()["conv_in.weight"] - before["conv_in.weight"]).abs().max() > 0


def test_lcm_sample_unet_matches_lcm_pipeline(parts):
    ptype = parts["scheduler"].config.prediction_type
    student = build_student_unet(parts["unet"], 256).eval()
    scheduler = LCMScheduler.from_config(parts["scheduler"].config)
    pipe = LatentConsistencyModelPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=student,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    cond = _embeds(parts, ["a red circle"])
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = pipe(
        prompt_embeds=cond,
        latents=latents.clone(),
        num_inference_steps=4,
        guidance_scale=8.0,
        generator=torch.Generator().manual_seed(4),
        output_type="latent",
    ).images
    ours = lcm_sample_unet(
        student,
        latents,
        cond,
        torch.tensor([7.0]),
        scheduler.alphas_cumprod,
        4,
        ptype,
        generator=torch.Generator().manual_seed(4),
    )
    assert (ours - ref).abs().max().item() <= 1e-5

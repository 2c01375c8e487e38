"""Boundary scalings, LCM timesteps and multistep sampling vs diffusers' LCMScheduler."""

import pytest
import torch
from diffusers import LCMScheduler

from trainer.lcd import boundary_scalings, consistency_output, lcm_sample, lcm_timesteps


def _lcm_scheduler(prediction_type: str) -> LCMScheduler:
    return LCMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        set_alpha_to_one=False,
    )


def _toy_model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear, timestep-dependent stand-in for a UNet."""
    t = t.to(z.dtype).view(-1, 1, 1, 1) / 1000.0
    return torch.tanh(0.7 * z) * (1.0 - t) + 0.3 * t * z.roll(1, dims=-1)


def test_boundary_scalings_match_lcm_scheduler():
    sched = _lcm_scheduler("epsilon")
    t = torch.tensor([0, 1, 19, 259, 499, 999])
    c_skip, c_out = boundary_scalings(t)
    for i, ti in enumerate(t.tolist()):
        ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(ti)
        assert abs(c_skip[i].item() - ref_skip) < 1e-12
        assert abs(c_out[i].item() - ref_out) < 1e-12
    assert c_skip[0] == 1.0 and c_out[0] == 0.0  # f(z, 0) = z, eq. 5


def test_lcm_timesteps_match_lcm_scheduler():
    assert lcm_timesteps(1) == [999]
    assert lcm_timesteps(2) == [999, 499]
    assert lcm_timesteps(4) == [999, 759, 499, 259]
    sched = _lcm_scheduler("epsilon")
    for n in range(1, 51):
        sched.set_timesteps(n)
        assert lcm_timesteps(n) == sched.timesteps.tolist(), n
    with pytest.raises(ValueError, match="num_steps"):
        lcm_timesteps(51)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_consistency_output_matches_lcm_denoised(prediction_type):
    sched = _lcm_scheduler(prediction_type)
    sched.set_timesteps(4)
    z, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ref = sched.step(out, 759, z).denoised  # step index 1
    ours = consistency_output(
        out, z, torch.tensor([759, 759]), sched.alphas_cumprod, prediction_type
    )
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [1, 2, 4])
def test_lcm_sample_matches_lcm_scheduler(prediction_type, num_steps):
    sched = _lcm_scheduler(prediction_type)
    sched.set_timesteps(num_steps)
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    for t in sched.timesteps:
        out = _toy_model(z, t.repeat(2))
        z, ref = sched.step(out, t, z, generator=gen, return_dict=False)

    gen = torch.Generator().manual_seed(7)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    ours = lcm_sample(
        _toy_model, latents, sched.alphas_cumprod, num_steps, prediction_type, generator=gen
    )
    assert (ours - ref).abs().max().item() <= 1e-5
    assert ref.abs().max() > 0.1  # a non-trivial result was compared


def test_lcm_sample_renoises_between_steps():
    """With 2 steps the second model call sees fresh noise: other seeds give other samples."""
    abar = _lcm_scheduler("epsilon").alphas_cumprod
    latents = torch.randn(1, 4, 8, 8)
    a = lcm_sample(_toy_model, latents, abar, 2, generator=torch.Generator().manual_seed(0))
    b = lcm_sample(_toy_model, latents, abar, 2, generator=torch.Generator().manual_seed(1))
    one = lcm_sample(_toy_model, latents, abar, 1)
    assert (a - b).abs().max() > 1e-3 and (a - one).abs().max() > 1e-3

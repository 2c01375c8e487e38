"""DDIM solver grid, DDIM step and prediction conversions vs diffusers' DDIMScheduler."""

import pytest
import torch
from diffusers import DDIMScheduler

from trainer.lcd import (
    add_noise,
    alpha_sigma,
    ddim_grid,
    ddim_step,
    from_x0_eps,
    sample_solver_indices,
    scaled_linear_alphas_cumprod,
    solver_timesteps,
    to_x0_eps,
)


def _ddim_scheduler(prediction_type: str, set_alpha_to_one: bool = False) -> DDIMScheduler:
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type=prediction_type,
        set_alpha_to_one=set_alpha_to_one,
    )
    sched.set_timesteps(50)  # step ratio 20 = the LCD skip k
    return sched


def test_alphas_cumprod_match_diffusers():
    ours = scaled_linear_alphas_cumprod()
    assert torch.equal(ours, _ddim_scheduler("epsilon").alphas_cumprod)


def test_ddim_grid_values():
    abar = scaled_linear_alphas_cumprod()
    grid = ddim_grid(abar, 50)
    assert grid.skip == 20
    assert grid.timesteps[:3].tolist() == [19, 39, 59] and grid.timesteps[-1].item() == 999
    assert grid.abar_prev[0] == abar[0]  # not 1.0
    index = torch.arange(50)
    t_start, t_end = solver_timesteps(grid, index)
    assert t_end[0].item() == 0 and torch.equal(t_end[1:], t_start[1:] - 20)
    assert torch.equal(grid.abar_prev, abar[t_end])  # abar_prev[n] is abar at the end point
    with pytest.raises(ValueError, match="num_ddim_timesteps"):
        ddim_grid(abar, 0)


def test_sample_solver_indices_is_seeded_and_in_range():
    grid = ddim_grid(scaled_linear_alphas_cumprod(), 50)
    a = sample_solver_indices(512, grid, torch.Generator().manual_seed(3))
    b = sample_solver_indices(512, grid, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 49
    assert len(a.unique()) > 40  # covers the grid


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_step_matches_diffusers_ddim(prediction_type):
    torch.manual_seed(0)
    sched = _ddim_scheduler(prediction_type)
    abar = sched.alphas_cumprod
    grid = ddim_grid(abar, 50)
    for n in [0, 1, 17, 49]:
        t_s = grid.timesteps[n]
        z = torch.randn(2, 4, 8, 8)
        out = torch.randn(2, 4, 8, 8)
        ref = sched.step(out, int(t_s), z, eta=0.0).prev_sample
        alpha, sigma = alpha_sigma(abar, t_s.repeat(2), z)
        x0, eps = to_x0_eps(out, z, alpha, sigma, prediction_type)
        ours = ddim_step(x0, eps, grid.abar_prev[torch.tensor([n, n])])
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_first_solver_step_ends_at_abar0_not_one():
    """diffusers' DDIM with set_alpha_to_one=True steps t=19 to abar=1; LCD's grid uses abar[0]."""
    sched_one = _ddim_scheduler("epsilon", set_alpha_to_one=True)
    grid = ddim_grid(sched_one.alphas_cumprod, 50)
    z, out = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    alpha, sigma = alpha_sigma(sched_one.alphas_cumprod, grid.timesteps[:1], z)
    x0, eps = to_x0_eps(out, z, alpha, sigma, "epsilon")
    ours = ddim_step(x0, eps, grid.abar_prev[:1])
    ref_one = sched_one.step(out, 19, z).prev_sample
    assert (ours - ref_one).abs().max() > 1e-3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_conversions_round_trip(prediction_type):
    torch.manual_seed(1)
    abar = scaled_linear_alphas_cumprod().double()
    x0, eps = torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 4, 8, 8).double()
    t = torch.tensor([5, 500, 999])
    z = add_noise(x0, eps, abar, t)
    alpha, sigma = alpha_sigma(abar, t, z)
    out = from_x0_eps(x0, eps, alpha, sigma, prediction_type)
    x0_back, eps_back = to_x0_eps(out, z, alpha, sigma, prediction_type)
    torch.testing.assert_close(x0_back, x0, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(eps_back, eps, atol=1e-9, rtol=1e-9)


def test_v_prediction_matches_diffusers_velocity():
    sched = _ddim_scheduler("v_prediction")
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 900])
    z = add_noise(x0, eps, sched.alphas_cumprod, t)
    alpha, sigma = alpha_sigma(sched.alphas_cumprod, t, z)
    ours = from_x0_eps(x0, eps, alpha, sigma, "v_prediction")
    torch.testing.assert_close(ours, sched.get_velocity(x0, eps, t), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z, sched.add_noise(x0, eps, t), atol=1e-6, rtol=1e-5)


def test_unknown_prediction_type_raises():
    z = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="prediction_type"):
        to_x0_eps(z, z, torch.ones(1), torch.ones(1), "flow")


@pytest.mark.parametrize(("num_train", "num_ddim"), [(1000, 50), (1000, 30), (100, 7), (10, 10)])
def test_the_configs_torch_free_grid_is_the_solver_grid(num_train, num_ddim):
    from trainer.config_checks import solver_grid

    grid = ddim_grid(scaled_linear_alphas_cumprod(num_train), num_ddim)
    assert solver_grid(num_train, num_ddim) == grid.timesteps.tolist()

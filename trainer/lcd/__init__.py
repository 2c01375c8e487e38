"""Latent consistency distillation math: pure tensor functions, no Ray, no I/O.

Plus the two student builders: full UNet with a w-embedding (student.py, EMA target in
ema.py) and LCM-LoRA adapters on the frozen teacher (lora.py).

See docs/method.md §1 and §4 and the paper's eq. 5, 8, 9, 13 and Algorithms 2-3.
"""

from trainer.lcd.boundary import (
    SIGMA_DATA,
    TIMESTEP_SCALING,
    boundary_scalings,
    consistency_output,
)
from trainer.lcd.distill import (
    consistency_function,
    noised_start,
    student_w_embedding,
)
from trainer.lcd.ema import ema_update_
from trainer.lcd.guidance import (
    apply_guidance,
    guidance_scale_embedding,
    sample_guidance_scale,
)
from trainer.lcd.lora import (
    AdaptersDisabled,
    adapters_disabled,
    add_lora_adapters,
    has_lora_adapters,
    lora_parameters,
    lora_state_dict,
)
from trainer.lcd.losses import LOSSES, distance_loss, l2_loss, pseudo_huber_loss
from trainer.lcd.predictions import (
    PREDICTION_TYPES,
    check_prediction_type,
    from_x0_eps,
    to_x0_eps,
)
from trainer.lcd.sampling import lcm_sample, lcm_sample_unet, lcm_timesteps
from trainer.lcd.schedule import (
    DDIMGrid,
    add_noise,
    alpha_sigma,
    append_dims,
    ddim_grid,
    ddim_step,
    sample_solver_indices,
    scaled_linear_alphas_cumprod,
    solver_timesteps,
)
from trainer.lcd.student import build_student_unet
from trainer.lcd.teacher import guided_teacher_step

__all__ = [
    "LOSSES",
    "PREDICTION_TYPES",
    "SIGMA_DATA",
    "TIMESTEP_SCALING",
    "AdaptersDisabled",
    "DDIMGrid",
    "adapters_disabled",
    "add_lora_adapters",
    "add_noise",
    "alpha_sigma",
    "append_dims",
    "apply_guidance",
    "boundary_scalings",
    "build_student_unet",
    "check_prediction_type",
    "consistency_function",
    "consistency_output",
    "ddim_grid",
    "ddim_step",
    "distance_loss",
    "ema_update_",
    "from_x0_eps",
    "guidance_scale_embedding",
    "guided_teacher_step",
    "has_lora_adapters",
    "l2_loss",
    "lcm_sample",
    "lcm_sample_unet",
    "lcm_timesteps",
    "lora_parameters",
    "lora_state_dict",
    "noised_start",
    "pseudo_huber_loss",
    "sample_guidance_scale",
    "sample_solver_indices",
    "scaled_linear_alphas_cumprod",
    "solver_timesteps",
    "student_w_embedding",
    "to_x0_eps",
]

"""Build the LCM student UNet from the teacher (paper section 4 / appendix A; docs/method.md §1).

The student is the teacher's ``UNet2DConditionModel`` plus a w-embedding input: with
``time_cond_proj_dim`` set, diffusers adds ``time_embedding.cond_proj`` (Linear, no bias) and
computes ``temb = MLP(t_emb + cond_proj(timestep_cond))``. Everything else is copied from the
teacher. ``cond_proj`` keeps its fresh (random) initialisation, as in the reference code:
the student then equals the teacher exactly when ``timestep_cond`` is all zeros (cond_proj
has no bias), which the tests check. Note that the embedding of w = 0 is not the zero
vector (cos 0 = 1), so for real guidance scales the student starts near, not at, the teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # diffusers is imported where a UNet is built (a slow import)
    from diffusers import UNet2DConditionModel

NEW_KEYS = {"time_embedding.cond_proj.weight"}


def build_student_unet(
    teacher_unet: UNet2DConditionModel,
    time_cond_proj_dim: int,
    dtype: torch.dtype = torch.float32,
) -> UNet2DConditionModel:
    """A trainable copy of `teacher_unet` taking a (B, time_cond_proj_dim) w-embedding.

    Weights are copied with ``strict=False``; the only parameter allowed to be missing is
    ``time_embedding.cond_proj.weight``. Returned on the teacher's device in `dtype`
    (float32 master weights by default, as the reference trains the student under autocast;
    build it before casting the teacher to half precision, or the copy is lossy), in train
    mode, with gradients enabled.
    """
    if time_cond_proj_dim < 1:
        raise ValueError(f"time_cond_proj_dim={time_cond_proj_dim} must be positive (use 256).")
    teacher_dim = teacher_unet.config.time_cond_proj_dim
    if teacher_dim is not None and teacher_dim != time_cond_proj_dim:
        raise ValueError(
            f"the teacher already takes a {teacher_dim}-dim timestep_cond; "
            f"build the student with time_cond_proj_dim={teacher_dim}."
        )
    from diffusers import UNet2DConditionModel

    student = UNet2DConditionModel.from_config(
        teacher_unet.config, time_cond_proj_dim=time_cond_proj_dim
    )
    result = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    unexpected = set(result.unexpected_keys)
    missing = set(result.missing_keys) - NEW_KEYS
    if unexpected or missing:
        raise RuntimeError(
            f"student/teacher weights do not line up: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    if student.device != teacher_unet.device:
        student.to(teacher_unet.device)
    if dtype != student.dtype:
        student.to(dtype=dtype)
    return student.train().requires_grad_(True)

"""The LCM-LoRA student (Luo et al. 2023b; the paper's appendix D distils SDXL this way).

Where LCM-LoRA departs from full-UNet LCD (``student.py`` + ``ema.py``):

* Student = the teacher's UNet with peft LoRA adapters on its attention projections
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` by default); the base weights stay frozen, only the
  adapters train. The teacher is the *same module with its adapters switched off*
  (`adapters_disabled`), so one UNet sits in memory instead of three (student, EMA target,
  teacher), which is why SDXL fits.
* No w-embedding: the student takes no ``timestep_cond`` (``time_cond_proj_dim`` stays None).
  The guidance scale w ~ U[w_min, w_max] is still drawn per sample but only enters the
  teacher's CFG step, so the adapters learn a fixed, averaged guidance; at sampling time
  ``guidance_scale`` 1 (no CFG) to 2 is used, as with the published LCM-LoRAs.
* No EMA target: the consistency target f(z_e, t_e) is computed by the online student itself
  under ``torch.no_grad()`` (a stop-gradient), as diffusers' LCM-LoRA training scripts do; the
  paper's appendix D takes LCM-LoRA as is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

ADAPTER_NAME = "default"


def add_lora_adapters(
    unet: nn.Module, rank: int, alpha: float, target_modules: Sequence[str]
) -> nn.Module:
    """Freeze `unet` and inject trainable LoRA adapters in place; returns `unet` in train mode.

    rank r, scale alpha / r, on the modules named (suffixes) in `target_modules`.

    lora_B starts at zero (peft's default init), so the student starts equal to the teacher.
    Adapter weights are float32 whatever the base dtype (mixed precision autocasts them).
    """
    from peft import LoraConfig

    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA rank ({rank}) must be >= 1 and alpha > 0.")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(target_modules),
    )
    unet.requires_grad_(False)
    try:
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    except ValueError as err:
        raise ValueError(
            f"model.lora.target_modules={list(target_modules)} does not fit the "
            f"teacher UNet ({err}); name its Linear/Conv layers, e.g. the attention "
            "projections (model.lora.target_modules' default)."
        ) from err
    for param in lora_parameters(unet):
        param.data = param.data.float()
    return unet.train()


def lora_parameters(unet: nn.Module) -> list[nn.Parameter]:
    """The adapter weights (lora_A / lora_B) of `unet`, in module order."""
    return [p for name, p in unet.named_parameters() if ".lora_" in name]


def has_lora_adapters(module: nn.Module) -> bool:
    return bool(getattr(module, "peft_config", None))


@contextmanager
def adapters_disabled(unet: nn.Module) -> Iterator[nn.Module]:
    """Run `unet` as the frozen teacher: adapters off inside the block, back on after.

    peft's ``enable_adapters`` also restores ``requires_grad`` on the adapter weights.
    """
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


class AdaptersDisabled(nn.Module):
    """`unet` seen as the teacher: every forward runs with the adapters switched off.

    Holds the same module (no copy), so it can stand wherever a teacher UNet is expected
    (e.g. ``guided_teacher_step``).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    @property
    def config(self):
        return self.unet.config

    def forward(self, *args, **kwargs):
        with adapters_disabled(self.unet):
            return self.unet(*args, **kwargs)


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors keyed like ``unet.state_dict()`` (for checkpoints), detached."""
    return {k: v.detach() for k, v in unet.state_dict().items() if ".lora_" in k}

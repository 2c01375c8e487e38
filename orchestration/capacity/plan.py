"""Per-GPU memory, FLOPs and step time of a recipe's training step (the capacity plan).

What one train GPU holds, in the dtypes the trainer uses (trainer/models.py loads every
component in float32; `model.mixed_precision` autocasts the forward passes):

  weights      student (full UNet + w-embedding, or the teacher UNet + LoRA adapters), the EMA
               target (full LCD), the frozen teacher UNet (full LCD; LoRA shares the
               student's), text encoder(s), VAE, the LRM (LRM mode) or the scorer (direct)
  optimizer    AdamW: two float32 moments per trainable parameter (8 B); AdamW8bit: two
               8-bit moments (2 B); the LRM's own AdamW over its trainable blocks
  DDP          one float32 gradient bucket per trainable parameter (several workers)
  step         the tensors one step creates, measured op by op under FakeTensorMode at the
               recipe's resolution and per-worker batch (orchestration/capacity/step.py):
               activations saved for backward, autocast's bf16 weight copies, temporaries,
               and the parameters' gradients
  optimizer    torch's foreach AdamW (the CUDA default) makes one float32 temporary per
  step         trainable parameter while the gradients are alive
  services     a reward-service replica placed on a fraction of a train GPU (serve.*.num_gpus
               beside scaling.gpus_per_worker): its weights and one batch's tensors
  reserve      CUDA context + NCCL buffers (GPU.reserve_bytes), and 5% of the rest for the
               caching allocator's fragmentation

FLOPs are torch's flop counter over the same step (matmuls, convolutions, attention); the
step time assumes a stated fraction of the GPU's dense bf16 peak (`utilisation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from orchestration.capacity.architectures import build_parts, recipe_archs
from orchestration.capacity.step import StepMeasurement, StepModels, measure_step, worker_models
from trainer.config import RGLCDConfig

GIB = 2**30
FRAGMENTATION = 0.05


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bf16_flops: float  # dense peak, FLOP/s
    reserve_bytes: int = int(1.5 * GIB)  # CUDA context + NCCL buffers

    @property
    def usable_bytes(self) -> int:
        return int((self.memory_bytes - self.reserve_bytes) * (1 - FRAGMENTATION))


GPUS = {
    "a100-40": GPU("a100-40", 40 * GIB, 312e12),
    "a100-80": GPU("a100-80", 80 * GIB, 312e12),
    "h100-80": GPU("h100-80", int(79.6 * GIB), 989e12),  # SXM
}
# optimizer state per trainable parameter: AdamW's two moments in the parameter's dtype,
# bitsandbytes' two 8-bit moments
def optimizer_bytes(name: str, parameters: list) -> int:
    per_element = {"adamw": lambda p: 2 * p.element_size(), "adamw8bit": lambda p: 2}[name]
    return sum(p.numel() * per_element(p) for p in parameters)


def _bytes(module: nn.Module | None, trainable: bool | None = None) -> int:
    if module is None:
        return 0
    return sum(
        p.numel() * p.element_size()
        for p in module.parameters()
        if trainable is None or p.requires_grad == trainable
    )


def _count(module: nn.Module | None, trainable: bool | None = None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


@dataclass
class CapacityPlan:
    """One train GPU's memory (bytes by line), FLOPs and parameter counts of a recipe."""

    recipe: str
    arch: str
    batch: int  # per worker
    resolution: int
    lines: dict[str, int] = field(default_factory=dict)  # static memory, by component
    step: StepMeasurement | None = None
    step_bytes: int = 0  # max(step working set, gradients + foreach temporary)
    params: dict[str, int] = field(default_factory=dict)
    trainable_params: int = 0
    per_sample_bytes: int = 0  # activation slope, from a second measurement
    grad_bytes: int = 0  # the trainable parameters' gradients
    services: dict[str, int] = field(default_factory=dict)  # replicas sharing this GPU

    @property
    def static_bytes(self) -> int:
        return sum(self.lines.values())

    @property
    def total_bytes(self) -> int:
        return self.static_bytes + self.step_bytes + sum(self.services.values())

    @property
    def activation_bytes(self) -> int:
        return self.step.peak_bytes - self.step.grad_bytes_at_peak

    def fits(self, gpu: GPU) -> bool:
        return self.total_bytes <= gpu.usable_bytes

    def largest_batch(self, gpu: GPU) -> int:
        """Largest per-worker batch whose memory fits: the student's part of the step grows
        linearly with the batch (slope from the second measurement), the rest does not."""
        fixed = self.total_bytes - self.step_bytes
        if fixed + self.step_bytes - self.step.student_peak_bytes > gpu.usable_bytes:
            return 0  # what does not grow with the batch already overflows
        room = gpu.usable_bytes - fixed - self.step.student_peak_bytes
        if self.per_sample_bytes <= 0:
            return self.batch if room >= 0 else 0
        return max(self.batch + room // self.per_sample_bytes, 0)

    def step_seconds(self, gpu: GPU, utilisation: float) -> float:
        return self.step.flops / (gpu.bf16_flops * utilisation)


def _static_lines(models: StepModels, cfg: RGLCDConfig) -> dict[str, int]:
    parts = models.parts
    trainable = models.trainable()
    lines = {
        "student weights": _bytes(models.student),
        "EMA target": _bytes(models.target),
        "teacher UNet (frozen)": 0 if models.target is None else _bytes(parts.unet),
        "text encoder(s) (frozen)": sum(_bytes(e) for e in parts.text_encoders),
        "VAE (frozen)": _bytes(parts.vae),
        "optimizer state": optimizer_bytes(cfg.lcd.optimizer, trainable),
    }
    if cfg.scaling.num_workers > 1:
        lines["DDP gradient buckets"] = sum(p.numel() * p.element_size() for p in trainable)
    if parts.lrm is not None:
        lines["LRM weights"] = _bytes(parts.lrm)
        lrm_trainable = [p for p in parts.lrm.parameters() if p.requires_grad]
        lines["LRM optimizer state"] = optimizer_bytes("adamw", lrm_trainable)
    if parts.expert is not None:
        lines["reward model (frozen)"] = _bytes(parts.expert)
    return lines


def _param_counts(models: StepModels) -> dict[str, int]:
    parts = models.parts
    counts = {
        "student": _count(models.student),
        "student trainable": sum(p.numel() for p in models.trainable()),
        "teacher UNet": _count(parts.unet) if models.target is not None else 0,
        "text encoders": sum(_count(e) for e in parts.text_encoders),
        "VAE": _count(parts.vae),
    }
    if parts.lrm is not None:
        counts |= {"LRM": _count(parts.lrm), "LRM trainable": _count(parts.lrm, True)}
    if parts.expert is not None:
        counts["reward model"] = _count(parts.expert)
    return counts


@dataclass(frozen=True)
class Precision:
    """Weight dtypes: the trainer keeps float32 everywhere (autocast does the bf16 math); the
    CPU benchmark may hold the frozen parts, or everything, in bf16 to fit its machine."""

    student: torch.dtype = torch.float32
    frozen: torch.dtype = torch.float32


def plan_recipe(
    cfg: RGLCDConfig,
    recipe: str = "",
    batch: int | None = None,
    device_type: str = "cuda",
    precision: Precision = Precision(),
) -> CapacityPlan:
    """Measure the recipe's step on fake tensors at its per-worker batch (or `batch`) and at
    twice that (the activation slope); `device_type` 'cuda' adds the foreach AdamW temporary."""
    batch = batch or max(cfg.per_worker_batch_size, 1)
    with FakeTensorMode():
        archs = recipe_archs(cfg)
        models = worker_models(build_parts(archs, precision.frozen), cfg, precision.student)
        first = measure_step(models, cfg, batch)
        second = measure_step(models, cfg, 2 * batch)
    grad_bytes = sum(p.numel() * p.element_size() for p in models.trainable())
    trainable = sum(p.numel() for p in models.trainable())
    # torch's foreach AdamW (CUDA default) holds one float32 temporary per trainable parameter
    foreach = 4 * trainable if device_type == "cuda" else 0
    plan = CapacityPlan(
        recipe=recipe,
        arch=archs.name,
        batch=batch,
        resolution=cfg.model.resolution,
        lines=_static_lines(models, cfg),
        step=first,
        step_bytes=max(first.peak_bytes, grad_bytes + foreach),  # backward | optimizer step
        params=_param_counts(models),
        trainable_params=trainable,
        grad_bytes=grad_bytes,
        per_sample_bytes=max((second.student_peak_bytes - first.student_peak_bytes) // batch, 0),
    )
    return plan


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def describe(plan: CapacityPlan, gpu: GPU, utilisation: float) -> str:
    """The plan as text: parameters, memory lines, FLOPs, largest batch, step time, verdict."""
    rows = [f"{plan.recipe or 'recipe'} ({plan.arch}, {plan.resolution} px, batch {plan.batch} "
            f"per GPU) on {gpu.name}"]
    rows += [f"  params {k}: {v / 1e6:.1f} M" for k, v in plan.params.items() if v]
    rows += [f"  {k}: {gib(v)} GiB" for k, v in plan.lines.items() if v]
    rows.append(f"  gradients: {gib(plan.grad_bytes)} GiB (from backward to the optimizer step)")
    rows.append(f"  one step's tensors at their peak: {gib(plan.step_bytes)} GiB (activations "
                f"{gib(plan.activation_bytes)} + gradients alive then "
                f"{gib(plan.step.grad_bytes_at_peak)}; or the optimizer step's gradients + "
                "temporaries when larger)")
    rows += [f"  co-located {k}: {gib(v)} GiB" for k, v in plan.services.items()]
    rows.append(f"  total: {gib(plan.total_bytes)} GiB of {gib(gpu.usable_bytes)} GiB usable "
                f"({gib(gpu.memory_bytes)} GiB card)")
    rows.append(f"  FLOPs per step: {plan.step.flops / 1e12:.1f} TFLOP; step time at "
                f"{utilisation:.0%} of {gpu.bf16_flops / 1e12:.0f} TFLOP/s bf16: "
                f"{plan.step_seconds(gpu, utilisation):.2f} s")
    rows.append(f"  largest per-GPU batch that fits: {plan.largest_batch(gpu)}")
    rows.append("  fits" if plan.fits(gpu) else "  DOES NOT FIT")
    return "\n".join(rows)

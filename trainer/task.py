"""The RG-LCD distillation task: student, frozen teacher, EMA target, text encoder, VAE, reward.

`DistillationTask.step(batch, step)` is the forward half of one training step (Algorithm 3
with its red reward term); the training loop backpropagates, clips, steps the optimizer and
calls `update_target()`. Stages, numbered as in the paper:

  1. per-sample draws: solver index n, guidance scale w ~ U[w_min, w_max], noise eps
  2. z_s = alpha_{t_s} z0 + sigma_{t_s} eps                          (Algorithm 3, line 5)
  3. text conditioning c (frozen text encoder(s), trainer/conditioning.py); uncond = the
     encoding of "" (SD) or zeros (SDXL)
  4. online  = f_theta(z_s, w, c, t_s)         student, with grad    (eq. 5)
  5. z_e     = DDIM step of the CFG teacher from z_s to t_e          (eq. 9, 13)
  6. target  = f_theta-(z_e, w, c, t_e)        EMA target, no grad
  7. L_LCD   = pseudo-Huber(online, target)                          (eq. 8)
  8. L       = L_LCD - beta * mean(R(online, c))   via the reward hook (eq. 10-11); with
     reward.timestep_window (off by default) only samples whose t_s lies in it count

Two students (`model.lora` of the config tree):
  full (default)  a copy of the teacher UNet plus a w-embedding input, trained whole; the
                  target is its EMA (paper sections 3-4).
  LCM-LoRA        LoRA adapters on the teacher UNet itself (trainer/lcd/lora.py; the paper's
                  appendix D for SDXL): no w-embedding (w only enters the teacher's CFG),
                  the teacher is the same UNet with its adapters off, and there is NO EMA
                  target: stage 6 runs the student itself under no_grad (a stop-gradient),
                  as in the LCM-LoRA training scripts. `target` is None then, and
                  `teacher.unet` carries the adapters: teacher calls go through
                  `task.teacher_unet`, which switches them off.

Overlap (`overlap_teacher`, CPU workers): stages 5-6 need no gradient and do not depend on
stage 4, so they run on a second thread: stage 6 beside the student's forward, and stages
1-3 + 5 of the NEXT step (`prefetch`, the frozen teacher needs nothing from this step's
update) beside this step's backward and optimizer. Each thread keeps its own
single-threaded op stream on its own core (the same numbers either way).

The stages are the pure functions of trainer/lcd/distill.py; tests/unit/test_task.py checks
that a step equals the same functions composed in order, bit for bit.

Settings: the `lcd` and `model` sections of the config tree (trainer/config.py), as they are.

Randomness: each sample's (n, w, eps) comes from its own generator seeded by
(seed, step, sample_key), so a run gives the same numbers whatever the number of workers.

Reward hooks (the reward term and its own training): trainer/reward/hooks.py.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from trainer.conditioning import Conditioning, encode_text, encode_uncond, image_size_of
from trainer.config import LCDConfig, ModelConfig
from trainer.data import LocalBatch, mix_seed
from trainer.lcd import (
    AdaptersDisabled,
    add_lora_adapters,
    build_student_unet,
    consistency_function,
    ddim_grid,
    distance_loss,
    ema_update_,
    guided_teacher_step,
    noised_start,
    sample_guidance_scale,
    sample_solver_indices,
    student_w_embedding,
)
from trainer.models import TeacherParts
from trainer.reward.hooks import RewardContext, RewardHook


@dataclass
class StepInputs:
    """Stages 1-3 (and 5: `z_end`) of one step: what the student and the target take."""

    latents: torch.Tensor  # z0
    z_start: torch.Tensor
    t_start: torch.Tensor
    t_end: torch.Tensor
    abar_end: torch.Tensor  # abar_prev[n] of each sample's solver index n
    w: torch.Tensor
    w_embedding: torch.Tensor | None
    cond: Conditioning
    uncond: Conditioning
    z_end: torch.Tensor | None = None  # the guided teacher's DDIM step (stage 5)


@dataclass
class StepTimer:
    """Wall-clock seconds per phase of a step (metrics `time_<phase>`)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def _teacher_thread() -> ThreadPoolExecutor:
    """One helper thread with the caller's intra-op thread count (OpenMP's is per thread).

    A daemon-like pool: it holds no state, and its thread ends with the process.
    """
    threads = torch.get_num_threads()
    return ThreadPoolExecutor(1, "lcd-teacher", initializer=torch.set_num_threads,
                              initargs=(threads,))


def build_student_and_target(
    teacher_unet: nn.Module, model: ModelConfig
) -> tuple[nn.Module, nn.Module | None]:
    """Full LCD: (w-embedding student, its EMA target copy); LCM-LoRA: (adapted teacher, None).

    LCM-LoRA (`model.lora` set) injects the adapters into `teacher_unet` in place (it becomes
    the student).
    """
    lora = model.lora
    if lora is not None:
        return add_lora_adapters(teacher_unet, lora.rank, lora.alpha, lora.target_modules), None
    student = build_student_unet(teacher_unet, model.time_cond_proj_dim)
    return student, copy.deepcopy(student).requires_grad_(False).eval()


class DistillationTask:
    """Owns the student, the EMA target, the frozen teacher parts and the reward hook."""

    def __init__(
        self,
        teacher: TeacherParts,
        lcd: LCDConfig,
        model: ModelConfig,
        *,
        seed: int,
        reward: RewardHook | None = None,
        overlap_teacher: bool = False,
    ) -> None:
        self.teacher = teacher
        self.lcd = lcd
        self.reward = reward if reward is not None and reward.beta != 0 else None
        self.seed = seed
        self.device = teacher.unet.device
        self.student, self.target = build_student_and_target(teacher.unet, model)
        # LCM-LoRA: the teacher is the student's own UNet with its adapters switched off
        self.teacher_unet = teacher.unet if self.target is not None else AdaptersDisabled(
            self.student
        )
        self.alphas_cumprod = teacher.alphas_cumprod.to(self.device)
        self.grid = ddim_grid(self.alphas_cumprod, lcd.num_ddim_timesteps)
        self.uncond = encode_uncond(teacher, lcd.uncond_prompt)  # one row
        self._student_call: nn.Module = self.student
        self._pending_context: RewardContext | None = None  # for the hook's after_step
        if overlap_teacher and self.target is None:
            raise ValueError(
                "overlap_teacher cannot run with LCM-LoRA: its teacher is the student with "
                "the adapters switched off, so the two calls cannot overlap"
            )
        self._teacher_thread = _teacher_thread() if overlap_teacher else None
        self._prefetched: tuple[int, LocalBatch, Future] | None = None  # (step, batch, stages)

    @property
    def is_lora(self) -> bool:
        return self.target is None

    @property
    def target_net(self) -> nn.Module:
        """The network of the consistency target: the EMA target, or (LCM-LoRA) the student."""
        return self.student if self.target is None else self.target

    def wrap_student(self, wrapper: nn.Module) -> None:
        """Run the student's forward through `wrapper` (e.g. DDP); weights stay `self.student`."""
        self._student_call = wrapper

    def draw(self, sample_keys: torch.Tensor, step: int, latent_shape: torch.Size):
        """Stage 1: per-sample (solver index (B,), w (B,), noise (B, C, h, w)) on the CPU."""
        indices, scales, noises = [], [], []
        for key in sample_keys.tolist():
            generator = torch.Generator().manual_seed(mix_seed(self.seed, step, key))
            indices.append(sample_solver_indices(1, self.grid, generator=generator).cpu())
            scales.append(
                sample_guidance_scale(1, self.lcd.w_min, self.lcd.w_max, generator)
            )
            noises.append(torch.randn(latent_shape, generator=generator))
        return torch.cat(indices), torch.cat(scales), torch.stack(noises)

    def prefetch(self, batch: LocalBatch, step: int) -> None:
        """With overlap: start stages 1-3 and 5 of step `step` on the helper thread now.

        The frozen teacher's DDIM step does not depend on the student, so the trainer calls
        this with the next batch right before the current step's backward: the teacher pass,
        the costliest no-grad call, then runs beside backward, optimizer and EMA. The target
        (stage 6) waits for the EMA update and runs in `step`. Without overlap: nothing.
        """
        if self._teacher_thread is None:
            return
        future = self._teacher_thread.submit(self._in_this_context(self._prepare), batch, step)
        self._prefetched = (step, batch, future)

    def step(self, batch: LocalBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one step on this worker's batch and its metrics (the caller backprops)."""
        timer = StepTimer()
        if self._teacher_thread is None:
            inputs = self._inputs(batch, step)
            timer.lap("teacher")
            online = self._online(inputs)
            timer.lap("student")
            inputs.z_end = self._teacher(inputs)
            target = self._target(inputs)
        else:  # stage 6 on the helper thread while this one runs stage 4
            inputs = self._prepared(batch, step).result()  # time_teacher: the wait only
            timer.lap("teacher")
            pending = self._teacher_thread.submit(self._in_this_context(self._target), inputs)
            online = self._online(inputs)
            timer.lap("student")
            target = pending.result()
        timer.lap("teacher")

        lcd = distance_loss(online, target, self.lcd.loss, self.lcd.huber_c)
        loss, metrics = lcd, {"lcd_loss": lcd.item()}
        if self.reward is not None:
            context = RewardContext(inputs.latents, online, target, batch.captions, step)
            rewards, extra = self.reward.student_reward(context)
            weights = self.reward.weights(inputs.t_start).to(rewards)
            loss = lcd - self.reward.beta * (rewards * weights).mean()  # eq. 11
            metrics |= {"reward_mean": rewards.mean().item(), **extra}
            if self.reward.timestep_window is not None:
                metrics["reward_weight_mean"] = weights.mean().item()
            self._pending_context = replace(context, online=online.detach())
            timer.lap("reward")
        metrics["loss"] = loss.item()
        metrics |= {f"time_{phase}": s for phase, s in timer.seconds.items()}
        return loss, metrics

    def _prepared(self, batch: LocalBatch, step: int) -> Future:
        """The prefetched stages of this step, or (none prefetched for it) start them now."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == step and prefetched[1] is batch:
            return prefetched[2]
        return self._teacher_thread.submit(self._in_this_context(self._prepare), batch, step)

    def _inputs(self, batch: LocalBatch, step: int) -> StepInputs:
        """Stages 1-3: draws, noised latents, text conditioning."""
        latents = batch.latents.to(self.device)
        index, w, noise = self.draw(batch.sample_keys, step, latents.shape[1:])
        index, w, noise = index.to(self.device), w.to(self.device), noise.to(latents)
        z_start, t_start, t_end, abar_end = noised_start(  # stage 2
            latents, noise, index, self.grid, self.alphas_cumprod
        )
        image_size = image_size_of(latents, self.teacher)
        return StepInputs(
            latents=latents,
            z_start=z_start,
            t_start=t_start,
            t_end=t_end,
            abar_end=abar_end,
            w_embedding=student_w_embedding(self.student, w, latents),  # None for LCM-LoRA
            w=w,
            cond=encode_text(self.teacher, batch.captions).with_time_ids(image_size),  # 3
            uncond=self.uncond.with_time_ids(image_size),
        )

    def _prepare(self, batch: LocalBatch, step: int) -> StepInputs:
        """Stages 1-3 and 5 (what `prefetch` runs ahead)."""
        inputs = self._inputs(batch, step)
        inputs.z_end = self._teacher(inputs)
        return inputs

    def _online(self, inputs: StepInputs) -> torch.Tensor:
        """Stage 4, the student with gradient."""
        return self._consistency(
            self._student_call, inputs.z_start, inputs.t_start, inputs.w_embedding, inputs.cond
        )

    def _teacher(self, inputs: StepInputs) -> torch.Tensor:
        """Stage 5: the guided teacher's DDIM step from t_start to t_end."""
        return guided_teacher_step(
            self.teacher_unet, inputs.z_start, inputs.t_start, inputs.abar_end,
            inputs.cond.hidden_states, inputs.uncond.hidden_states, inputs.w,
            self.alphas_cumprod, self.teacher.prediction_type, inputs.cond.added,
            inputs.uncond.added,
        )

    def _target(self, inputs: StepInputs) -> torch.Tensor:
        """Stage 6: the target's output at z_end (no grad; LCM-LoRA: the student itself)."""
        with torch.no_grad():
            return self._consistency(
                self.target_net, inputs.z_end, inputs.t_end, inputs.w_embedding, inputs.cond
            )

    def _in_this_context(self, function):
        """`function` under the calling thread's autocast (it is thread-local)."""
        device = self.device.type
        enabled = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device)

        def run(*args):
            with torch.autocast(device, dtype=dtype, enabled=enabled):
                return function(*args)

        return run

    def _consistency(self, unet, z, t, w_embedding, cond: Conditioning) -> torch.Tensor:
        """Stages 4/6: f(z, t) = c_skip z + c_out x0(unet(z, t, w, c))."""
        return consistency_function(
            unet, z, t, w_embedding, cond.hidden_states, cond.added, self.alphas_cumprod,
            self.teacher.prediction_type,
        )

    def after_optimizer_step(self) -> dict[str, float]:
        """EMA target update (Algorithm 3, last line; none for LCM-LoRA), then the reward
        hook's own training."""
        if self.target is not None:
            ema_update_(self.target, self.student, self.lcd.ema_decay)
        if self._pending_context is None:
            return {}
        context, self._pending_context = self._pending_context, None
        return self.reward.after_step(context)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad]

"""`run_worker`: the recipe each Ray Train worker runs (Algorithm 3's outer loop); Ray Train
enters it through trainer/cluster/worker.py.

One iteration: next local batch -> task.step (loss) -> backward -> grad clip -> AdamW step ->
EMA target update. Around it: resume from the last checkpoint, DDP when world_size > 1,
metrics every `output.log_every` steps, a checkpoint every `output.checkpoint_every` steps
and at the end (reported to Ray Train), sample grids, and on rank 0 the pipeline export and
run report. The loop never spells out LCD: that lives in `trainer.task`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from reward_service.scorers.registry import build_scorer
from rglcd import storage
from trainer.cluster.faults import maybe_fail
from trainer.config import RGLCDConfig
from trainer.data import EarlyFirstBatch, local_batches
from trainer.models import TeacherParts, load_teacher, teacher_folder
from trainer.reward.hooks import DirectReward, RewardHook
from trainer.run_outputs.checkpointing import (
    TrainState,
    checkpoint_name,
    load_checkpoint,
    save_checkpoint,
)
from trainer.run_outputs.layout import LORA_SUBDIR, PIPELINE_SUBDIR, SAMPLES_SUBDIR
from trainer.run_outputs.monitoring import COUNTER_KEYS, MetricsLogger
from trainer.run_outputs.rng_state import gather_rng_states
from trainer.run_outputs.sample_grid import write_validation_grid
from trainer.task import DistillationTask


def build_reward_hook(cfg: RGLCDConfig, teacher: TeacherParts) -> RewardHook | None:
    """The reward term the config asks for (None = plain LCD)."""
    if not cfg.reward.enabled:
        return None
    hook = _reward_hook(cfg, teacher)
    hook.timestep_window = cfg.reward.timestep_window
    return hook


def _reward_hook(cfg: RGLCDConfig, teacher: TeacherParts) -> RewardHook:
    if cfg.reward.mode == "lrm":  # latent proxy RM + asynchronous expert (Algorithm 4)
        from trainer.reward.lrm_hook import build_lrm_hook  # deferred: loads transformers

        return build_lrm_hook(cfg, teacher.unet.device, vae=teacher.vae)

    spec = cfg.serve.scorer(cfg.reward.model).model_copy()
    if spec.device == "auto":
        spec.device = str(teacher.unet.device)
    if cfg.model.gradient_checkpointing:
        teacher.vae.enable_gradient_checkpointing()
    return DirectReward(
        build_scorer(spec), teacher.vae, cfg.reward.beta, cfg.reward.decode_chunk_size or 0
    )


def build_task(cfg: RGLCDConfig, device: torch.device) -> DistillationTask:
    """Teacher from `model.teacher`, student/target from it, reward hook from `reward`."""
    model = cfg.model
    teacher = load_teacher(model.teacher, device, model.vae, model.revision, model.family)
    if len(teacher.alphas_cumprod) != cfg.lcd.num_train_timesteps:
        raise ValueError(
            f"the teacher's schedule has {len(teacher.alphas_cumprod)} timesteps but "
            f"lcd.num_train_timesteps={cfg.lcd.num_train_timesteps}; make them agree."
        )
    torch.manual_seed(cfg.seed)  # the student's fresh cond_proj (same on every rank)
    task = DistillationTask(
        teacher, cfg.lcd, cfg.model, seed=cfg.seed, reward=build_reward_hook(cfg, teacher),
        overlap_teacher=cfg.scaling.overlap_teacher and device.type == "cpu",
    )
    if cfg.model.gradient_checkpointing:
        task.student.enable_gradient_checkpointing()
    return task


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or bitsandbytes' AdamW8bit when installed (ValueError saying what to do)."""
    if name == "adamw":
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError as err:
        raise ValueError(
            "lcd.optimizer=adamw8bit needs the optional bitsandbytes package (CUDA only): "
            "pip install bitsandbytes, or set lcd.optimizer=adamw"
        ) from err
    return bitsandbytes.optim.AdamW8bit


def build_optimizer(cfg: RGLCDConfig, task: DistillationTask) -> torch.optim.Optimizer:
    """AdamW with the reference betas/eps/weight decay and a constant learning rate."""
    lcd = cfg.lcd
    return optimizer_class(lcd.optimizer)(
        task.trainable_parameters(),
        lr=lcd.learning_rate,
        betas=(lcd.adam_beta1, lcd.adam_beta2),
        eps=lcd.adam_eps,
        weight_decay=lcd.weight_decay,
    )


def train_state(cfg: RGLCDConfig, task: DistillationTask, optimizer) -> TrainState:
    """What a checkpoint holds: student, target, optimizer (+ the reward hook's own state).

    LCM-LoRA has no target, and its student is checkpointed as its adapters only (the frozen
    base weights are the teacher's; trainer/run_outputs/checkpointing.py).
    """
    modules: dict[str, nn.Module] = {"student": task.student}
    if task.target is not None:
        modules["target"] = task.target
    stateful: dict[str, object] = {"optimizer": optimizer}
    if task.reward is not None:
        hook_modules, hook_stateful = task.reward.trainable_state()
        modules |= hook_modules
        stateful |= hook_stateful
    return TrainState(step=0, modules=modules, stateful=stateful, config=cfg)


def mean_over_workers(metrics: dict[str, float], world_size: int) -> dict[str, float]:
    """Average each metric over ranks (collective; every rank calls it with the same keys)."""
    if world_size == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return {k: v / world_size for k, v in zip(keys, values.tolist(), strict=True)}


def autocast_context(cfg: RGLCDConfig, device: torch.device):
    """bf16/fp16 autocast for the forward passes when model.mixed_precision asks for it."""
    if cfg.model.mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.model.mixed_precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    """One worker's training state and the steps of its loop."""

    def __init__(self, cfg: RGLCDConfig, rank: int, world_size: int, device: torch.device):
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.task = build_task(cfg, device)
        self.optimizer = build_optimizer(cfg, self.task)
        self.scaler = torch.amp.GradScaler(enabled=cfg.model.mixed_precision == "fp16")
        self.state = train_state(cfg, self.task, self.optimizer)
        self.output_dir = cfg.output_dir  # a path or URI: written through rglcd/storage.py

    def resume(self, checkpoint_dir: Path | None, verified: bool = False) -> None:
        """Load a checkpoint (verified here unless `verified`; a corrupt one raises)."""
        if checkpoint_dir is not None:
            load_checkpoint(checkpoint_dir, self.state, rank=self.rank, verified=verified)

    def wrap_for_ddp(self) -> None:
        """DDP only with several workers; single-worker runs keep the bare student."""
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(self.task.student, device_ids=device_ids)
            self.task.wrap_student(ddp)

    def train_step(self, batch, step: int, next_batch=None) -> dict[str, float]:
        """Forward (task), backward, clip, optimizer step, EMA; returns this rank's metrics.

        `next_batch` (the following step's) lets the task start its teacher pass now, beside
        this step's backward (`scaling.overlap_teacher`; same numbers either way).
        """
        with autocast_context(self.cfg, self.device):
            loss, metrics = self.task.step(batch, step)
            if next_batch is not None:
                self.task.prefetch(next_batch, step + 1)
        start = time.perf_counter()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(
            self.task.trainable_parameters(), self.cfg.lcd.max_grad_norm
        )
        metrics["time_backward"] = time.perf_counter() - start
        start = time.perf_counter()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        metrics |= self.task.after_optimizer_step()
        metrics["time_optimizer"] = time.perf_counter() - start
        metrics["grad_norm"] = float(grad_norm)
        return metrics

    def save(self, directory: Path) -> Path | None:
        """Collective RNG gather, then rank 0 writes the checkpoint; returns its path on rank 0."""
        self.state.rng_states = gather_rng_states()
        if self.rank != 0:
            return None
        return save_checkpoint(directory / checkpoint_name(self.state.step), self.state)

    def write_samples(self, step: int) -> str | None:
        """Rank 0: PNG grid of 1/2/4-step samples of the EMA target (LCM-LoRA: the student)."""
        if self.rank != 0 or not self.cfg.data.validation_prompts:
            return None

        location = storage.join(self.output_dir, SAMPLES_SUBDIR, f"step_{step:06d}.png")
        with storage.staged_file(location) as path:
            write_validation_grid(
                self.task.target_net, self.task.teacher, self.cfg.data.validation_prompts, path,
                seed=self.cfg.seed,
            )
        return location

    def export(self) -> str:
        """Rank 0: the target UNet + teacher parts + LCMScheduler as a pipeline folder; LCM-LoRA:
        the adapters (<output_dir>/lora) and, with model.lora.export_fused, a fused pipeline."""
        from trainer.run_outputs.export import export_pipeline  # deferred: loads diffusers

        if self.task.is_lora:
            return self.export_lora()
        teacher = self.task.teacher
        parts = {
            "vae": teacher.vae,
            "text_encoder": teacher.text_encoder,
            "tokenizer": teacher.tokenizer,
            "scheduler": teacher.scheduler,
        }
        location = storage.join(self.output_dir, PIPELINE_SUBDIR)
        with storage.staged_dir(location) as folder:
            export_pipeline(
                self.task.target, parts, folder,
                original_inference_steps=self.cfg.lcd.num_ddim_timesteps,
            )
        return location


    def export_lora(self) -> str:
        """Adapters in diffusers' LoRA format; optionally the fused teacher pipeline too."""
        from trainer.run_outputs.export import (  # deferred: loads diffusers
            export_fused_lora_pipeline,
            export_lora_adapters,
        )

        model = self.cfg.model
        location = storage.join(self.output_dir, LORA_SUBDIR)
        with storage.staged_dir(location) as folder:
            adapters = export_lora_adapters(self.task.student, folder, model.family)
            if model.lora.export_fused:
                teacher = teacher_folder(model.teacher, model.revision, model.family)
                with storage.staged_dir(storage.join(self.output_dir, PIPELINE_SUBDIR)) as fused:
                    export_fused_lora_pipeline(
                        adapters, teacher, fused, model.family,
                        original_inference_steps=self.cfg.lcd.num_ddim_timesteps,
                        vae=self.task.teacher.vae if model.vae else None,
                    )
        return location


def _due(step: int, every: int, last: bool) -> bool:
    return last or (every > 0 and step % every == 0)


def _carry_counters(metrics: dict[str, float], carried: dict[str, float]) -> None:
    """Per-step counts (e.g. skipped reward updates) add up over the steps that are not logged:
    a logged row holds the count since the previous logged row, so the run report's sum is
    the run's total whatever output.log_every is."""
    for key in COUNTER_KEYS:
        if key in metrics:
            carried[key] = carried.get(key, 0.0) + metrics[key]
            metrics[key] = carried[key]


def worker_threads(scaling, node_cores: int, local_workers: int) -> int:
    """scaling.torch_threads, or (0 = auto) the node's cores shared by its workers."""
    if scaling.torch_threads:
        return scaling.torch_threads
    return max(math.ceil(scaling.cpus_per_worker), node_cores // max(local_workers, 1), 1)


def run_worker(loop_config: dict, verified: bool = False) -> None:
    """One Ray Train worker's run; `loop_config["config"]` is the RGLCDConfig as a plain dict.

    `verified`: trainer/cluster/worker.py has already checked Ray Train's checkpoint against its
    manifest (no second hashing pass).
    """
    import ray.train
    import ray.train.torch

    cfg = RGLCDConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(
        worker_threads(cfg.scaling, os.cpu_count() or 1, context.get_local_world_size())
    )
    torch.backends.cuda.matmul.allow_tf32 = cfg.model.allow_tf32
    torch.backends.cudnn.allow_tf32 = cfg.model.allow_tf32
    shard = ray.train.get_dataset_shard("train")
    checkpoint = ray.train.get_checkpoint()
    early = None
    if checkpoint is None and not loop_config.get("initial_checkpoint"):
        # A fresh run reads from the start: the stream starts while the models load.
        early = EarlyFirstBatch(local_batches(
            shard, cfg.lcd.global_batch_size, rank, world_size, cfg.seed))
    trainer = Trainer(cfg, rank, world_size, ray.train.torch.get_device())
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.resume(Path(directory), verified)
    elif loop_config.get("initial_checkpoint"):
        trainer.resume(Path(loop_config["initial_checkpoint"]))
    trainer.wrap_for_ddp()
    run_steps(trainer, shard, _report_to_ray, early)


def _report_to_ray(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
    import ray.train

    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
    ray.train.report(metrics, checkpoint=checkpoint)


def run_steps(trainer: Trainer, shard, report, batches=None) -> None:
    """The loop proper: from the resumed step to lcd.max_steps, then export on rank 0.

    `report(metrics, checkpoint_dir_or_None)` is called on every rank at checkpoint steps.
    `batches`: this rank's batches from the start of the stream, already started (a fresh
    run); by default they are read from `shard` at the resumed position.
    """
    cfg, state = trainer.cfg, trainer.state
    if batches is None:
        batches = local_batches(
            shard, cfg.lcd.global_batch_size, trainer.rank, trainer.world_size, cfg.seed,
            start=state.data_position,
        )
    logger = MetricsLogger(trainer.output_dir, trainer.rank, cfg.run_name, state.step)
    carried: dict[str, float] = {}  # counters of steps not logged yet
    with logger, tempfile.TemporaryDirectory(prefix="rglcd-ckpt-") as scratch:
        upcoming = None  # the next step's batch, fetched a step early for the teacher prefetch
        for step in range(state.step, cfg.lcd.max_steps):
            maybe_fail(step, trainer.rank)  # testing hook, inert by default
            last = step == cfg.lcd.max_steps - 1
            start = time.perf_counter()
            batch = upcoming if upcoming is not None else next(batches)
            upcoming = None if last else next(batches)
            data_seconds = time.perf_counter() - start
            metrics = trainer.train_step(batch, step, upcoming)
            metrics["time_data"] = data_seconds
            metrics["time_step"] = time.perf_counter() - start  # data + the whole train_step
            _carry_counters(metrics, carried)
            state.step, state.data_position = step + 1, batch.position
            if _due(step, cfg.output.log_every, last):
                logger.log(step, mean_over_workers(metrics, trainer.world_size))
                carried.clear()
            if _due(step, cfg.output.sample_every, last) and step > 0:
                trainer.write_samples(step + 1)
            if _due(state.step, cfg.output.checkpoint_every, last):
                saved = trainer.save(Path(scratch))
                report({"step": state.step, "loss": metrics["loss"]}, saved)
                if saved is not None:
                    shutil.rmtree(saved)  # Ray Train has persisted its own copy
    if trainer.rank == 0:
        trainer.export()

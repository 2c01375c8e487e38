"""The one typed configuration tree of the RG-LCD trainer.

Defaults live only here and describe the toy world (a miniature SD on 32x32 scenes that
trains on a laptop CPU); real-scale values come from YAML recipes in `configs/`, which hold
only what differs. Load with::

    cfg = load_trainer_config("configs/toy-rglcd-toy-clip.yaml", ["lcd.max_steps=50"])

Which reward guides the student (paper eq. 11 and section 4.2); the defaults here are plain
LCD, and `configs/toy-rglcd-lrm-toy-judge.yaml` (what `python trainer/run.py` runs with no --config) the full
method (RG-LCD + LRM, toy-judge expert):
  reward.beta == 0           plain LCD (Algorithm 3 without the reward term); no scorer is used,
                             reward.model must stay null.
  reward.mode == "direct"    L = L_LCD - beta * R(D(f_theta), c): `reward.model` names a
                             differentiable scorer from `serve.scorers` (e.g. "toy-clip").
  reward.mode == "lrm"       L = L_LCD - beta * R^L(f_theta, c): the latent proxy RM at
                             `lrm.checkpoint` guides the student and learns from the expert
                             scorer `lrm.expert` (Algorithm 4); `reward.model` stays null.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from reward_service.config import ServeConfig
from rglcd import storage
from rglcd.config_base import StrictModel
from rglcd.configuration import ConfigError, load_config
from rglcd.toy.paths import TOY_LRM, TOY_PIPELINE
from trainer.config_checks import cross_field_problems
from trainer.family import FAMILIES, model_family
from trainer.reward.config import LRMConfig, RewardConfig

TOY_DATA_SUBDIR = "toy-data"
_TOY_ARTIFACTS = (TOY_PIPELINE, TOY_LRM)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# LCM-LoRA's adapted modules: the UNet's attention projections (trainer/lcd/lora.py)
LORA_ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


class LoRAConfig(StrictModel):
    """LCM-LoRA (Luo et al. 2023b; the paper's appendix D distils SDXL this way).

    The student is the teacher UNet plus LoRA adapters (base weights frozen), with no
    w-embedding (model.time_cond_proj_dim is unused: w only enters the teacher's CFG) and no
    EMA target (lcd.ema_decay is unused: the target is the student itself under no_grad);
    see trainer/lcd/lora.py. Allowed for both families: SD1.x/2.x LCM-LoRAs exist too.
    The run exports adapters to <output_dir>/lora, loadable with `pipe.load_lora_weights`.
    """

    rank: int = Field(64, ge=1, description="LoRA rank r (LCM-LoRA: 64).")
    alpha: float = Field(
        64.0, gt=0, description="lora_alpha; the adapter update is scaled by alpha / rank."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_ATTENTION_PROJECTIONS),
        min_length=1,
        description="UNet module names (suffixes) that get adapters. Default: the attention "
        "projections. diffusers' LCM-LoRA scripts also adapt proj_in, proj_out, ff.net.0.proj, "
        "ff.net.2, conv1, conv2, conv_shortcut, downsamplers.0.conv, upsamplers.0.conv and "
        "time_emb_proj.",
    )
    export_fused: bool = Field(
        False,
        description="Also write <output_dir>/pipeline: the teacher pipeline with the adapters "
        "fused into its UNet and an LCMScheduler (a full copy of the teacher's weights).",
    )


class ModelConfig(StrictModel):
    """The teacher LDM the student is initialised from and distilled from."""

    teacher: str = Field(
        TOY_PIPELINE,
        description="Diffusers pipeline folder, s3:// / gs:// URI (copied once per node into "
        "the local cache) or hub id (org/name, loaded offline). Default: the committed toy "
        "pipeline, pkg://rglcd.toy/artifacts/pipeline. Write relative local paths as ./path "
        "(see is_local_path); they are read relative to each node's working directory.",
    )
    revision: str | None = Field(None, description="Hub revision of the teacher.")
    family: str = Field(
        "sd",
        description=f"One of {tuple(FAMILIES)} (trainer/family.py). "
        "'sd': SD1.x/2.x StableDiffusionPipeline folder (one text encoder). "
        "'sdxl': StableDiffusionXLPipeline folder (two text encoders, pooled text + time-id "
        "conditioning); needs model.lora (the paper distils SDXL as LCM-LoRA).",
    )
    lora: LoRAConfig | None = Field(
        None,
        description="null: full-UNet LCD with a w-embedding and an EMA target. A mapping (e.g. "
        "model.lora.rank=64): LCM-LoRA, see LoRAConfig.",
    )
    vae: str | None = Field(
        None, description="AutoencoderKL folder or hub id replacing the teacher's VAE."
    )
    prediction_type: Literal["auto", "epsilon", "v_prediction", "sample"] = Field(
        "auto", description="'auto' reads the teacher scheduler's (SD2.1-768 is v_prediction)."
    )
    time_cond_proj_dim: int = Field(
        256, ge=4, description="Width of the guidance-scale embedding (docs/method.md §1)."
    )
    resolution: int = Field(32, ge=8, description="Training image side in pixels (toy: 32).")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = Field(
        False, description="Student UNet, and the VAE decoder on the direct reward path."
    )
    allow_tf32: bool = Field(
        True, description="TF32 matmuls/convolutions on Ampere+ GPUs (no effect on CPU)."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if model_family(self.family).lora_only and self.lora is None:
            raise ValueError(
                f"model.family={self.family} needs model.lora (e.g. model.lora.rank=64): SDXL is "
                "distilled as LCM-LoRA (paper appendix D); full-UNet SDXL distillation with an "
                "EMA target is not supported"
            )
        if self.time_cond_proj_dim % 2:
            raise ValueError(
                f"model.time_cond_proj_dim={self.time_cond_proj_dim} must be even "
                "(the embedding is [sin, cos] halves); use 256 as in LCM"
            )
        if self.resolution % 8:
            raise ValueError(
                f"model.resolution={self.resolution} must be a multiple of 8 "
                "(the VAE downsamples by a power of two); e.g. 32 (toy) or 768 (SD2.1)"
            )
        return self


class DataConfig(StrictModel):
    """Training captions and images (or pre-encoded latents) in Parquet."""

    train_path: str | None = Field(
        None,
        description="Parquet folder or glob. None = toy data under <output.root_dir>/toy-data, "
        "generated by the trainer when missing; an explicit path must exist.",
    )
    format: Literal["auto", "images", "latents"] = Field(
        "auto", description="'auto' picks latents when the latent column exists, else images."
    )
    image_column: str = "image"
    caption_column: str = "caption"
    latent_column: str = "latent"
    validation_prompts: list[str] = Field(
        default_factory=lambda: [
            "a large red circle on a blue background",
            "a small yellow square on a black background",
            "a large green triangle on a white background",
            "a small purple cross on an orange background",
        ],
        description="Prompts sampled every output.sample_every steps.",
    )
    num_workers: int = Field(0, ge=0, description="Data-loading worker processes per trainer.")


class LCDConfig(StrictModel):
    """Latent consistency distillation (paper Algorithm 3; docs/method.md §1)."""

    num_ddim_timesteps: int = Field(50, ge=1, description="N; skip k = T // N = 20.")
    num_train_timesteps: int = Field(1000, ge=1, description="T of the teacher's DDPM schedule.")
    w_min: float = Field(5.0, ge=0, description="Guidance scale range, LCM form (paper: [5, 15]).")
    w_max: float = Field(15.0, ge=0)
    loss: Literal["huber", "l2"] = "huber"
    huber_c: float = Field(1e-3, gt=0, description="Pseudo-Huber c.")
    ema_decay: float = Field(0.95, ge=0, lt=1, description="mu of the target network update.")
    learning_rate: float = Field(
        1e-4,
        gt=0,
        description="Paper: 1e-6 for 10k steps at batch 256 on SD2.1. Toy default 1e-4: the toy "
        "run sees ~270x fewer samples (600 steps at batch 16) with a ~200x smaller UNet, and "
        "1e-6 barely moves it in that budget.",
    )
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw",
        description="'adamw8bit': bitsandbytes' 8-bit AdamW (optional dependency, CUDA only; "
        "pip install bitsandbytes), ~4x less optimizer memory.",
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # Toy: 600 steps of 16 rather than 300 of 32 (the same samples): more, smaller steps are
    # what lets the 2-step RG-LCM + LRM beat plain LCD's 4-step (docs/results.md).
    max_steps: int = Field(600, ge=1, description="Optimizer steps (paper: 10k; toy: 600).")
    global_batch_size: int = Field(
        16, ge=1, description="Summed over workers (paper: 256 LCD, 40 RG-LCD; toy: 16)."
    )
    uncond_prompt: str = Field("", description="Prompt of the unconditional branch of CFG.")

    @model_validator(mode="after")
    def _check(self) -> LCDConfig:
        if self.w_min > self.w_max:
            raise ValueError(f"lcd.w_min ({self.w_min}) must be <= lcd.w_max ({self.w_max})")
        if self.num_ddim_timesteps > self.num_train_timesteps:
            raise ValueError(
                f"lcd.num_ddim_timesteps ({self.num_ddim_timesteps}) must be <= "
                f"lcd.num_train_timesteps ({self.num_train_timesteps})"
            )
        return self


class ScalingConfig(StrictModel):
    """Ray Train workers (data parallel)."""

    num_workers: int = Field(1, ge=0, description="0 = run in the driver process (tests).")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0, description="None = 1 if use_gpu else 0.")
    max_failures: int = Field(
        0,
        ge=-1,
        description="Worker-group restarts from the last checkpoint after a worker or node "
        "fails; -1 = unlimited. 0 for the toy world; real-scale recipes set 3.",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom resources each train worker needs besides CPUs/GPUs, to pin workers "
        "to nodes started with them (e.g. {train_node: 1}; docs/cluster.md, Placement).",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="Torch intra-op threads per worker. Ray sets OMP_NUM_THREADS to the "
        "worker's CPU reservation (1 by default), which leaves cores idle once the data is "
        "encoded; 0 = auto: the node's cores / workers on the node, at least cpus_per_worker.",
    )

    overlap_teacher: bool = Field(
        False,
        description="CPU workers: run the target network on a second thread while the "
        "student's forward runs on this one, and the next step's frozen-teacher pass there "
        "while this step's backward and optimizer run (same numbers, another core busy). "
        "Pays off when torch_threads leaves cores idle; the toy default "
        "sets torch_threads=1 and this to true. Ignored on GPU; not for LCM-LoRA (its teacher "
        "is the student with its adapters switched off).",
    )

    @model_validator(mode="after")
    def _check(self) -> ScalingConfig:
        if self.gpus_per_worker and not self.use_gpu:
            raise ValueError(
                f"scaling.gpus_per_worker={self.gpus_per_worker} needs scaling.use_gpu=true"
            )
        return self


class OutputConfig(StrictModel):
    """Where checkpoints, samples and logs go, and how often."""

    root_dir: str = Field(
        "outputs",
        description="Where runs are stored: a local or NFS path, or an s3:// / gs:// URI "
        "(checkpoints, metrics, samples, report, exported pipeline, toy data). A relative "
        "path is relative to the driver's working directory; on a cluster whose nodes share "
        "no disk it must be a URI (docs/cluster.md, Storage).",
    )
    dir: str | None = Field(None, description="None = <root_dir>/<run_name> (see output_dir).")
    checkpoint_every: int = Field(100, ge=0, description="Steps; 0 = only the final one.")
    keep_checkpoints: int = Field(2, ge=1)
    sample_every: int = Field(100, ge=0, description="Steps; 0 = never during training.")
    log_every: int = Field(10, ge=1)


class RGLCDConfig(StrictModel):
    """Root of the trainer's configuration tree."""

    run_name: str = Field("toy-rglcd", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lcd: LCDConfig = Field(default_factory=LCDConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    lrm: LRMConfig = Field(default_factory=LRMConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def output_dir(self) -> str:
        """The run's storage location (a path or URI; rglcd/storage.py opens it)."""
        return self.output.dir or storage.join(self.output.root_dir, self.run_name)

    @property
    def uses_toy_data(self) -> bool:
        return self.data.train_path is None

    @property
    def train_data_path(self) -> str:
        return self.data.train_path or storage.join(self.output.root_dir, TOY_DATA_SUBDIR)

    @property
    def per_worker_batch_size(self) -> int:
        return self.lcd.global_batch_size // max(self.scaling.num_workers, 1)

    @property
    def uses_lrm(self) -> bool:
        return self.reward.enabled and self.reward.mode == "lrm"

    @property
    def expert_vae_name(self) -> str:
        """The serve.vaes entry that decodes expert requests (lrm.expert_vae or the only one)."""
        if self.lrm.expert_vae is not None:
            return self.lrm.expert_vae
        if len(self.serve.vaes) != 1:
            raise ValueError(
                f"serve.vaes has {sorted(self.serve.vaes)}; set lrm.expert_vae to the one that "
                "decodes the teacher's latents"
            )
        return next(iter(self.serve.vaes))

    @property
    def teacher_vae(self) -> tuple[str, str | None]:
        """(path, subfolder) of the VAE whose latents the student makes: model.vae, else the
        teacher pipeline's vae/ folder."""
        if self.model.vae is not None:
            return self.model.vae, None
        return self.model.teacher, "vae"

    @model_validator(mode="after")
    def _check(self) -> RGLCDConfig:
        # VAEs without a path decode with the teacher's: a recipe names its teacher once
        self.serve.fill_vae_paths(*self.teacher_vae)
        problems = cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))  # one line per problem (ConfigError bullets)
        return self

    def missing_paths(self) -> list[str]:
        """Local paths this run reads that do not exist (hub ids and object-store URIs are not
        checked here: validate_before_ray in trainer/run.py opens those)."""
        checks = [("model.teacher", self.model.teacher), ("model.vae", self.model.vae)]
        if self.uses_lrm:
            checks.append(("lrm.checkpoint", self.lrm.checkpoint))
        if not self.uses_toy_data:
            checks.append(("data.train_path", self.data.train_path))
        problems = []
        for key, value in checks:
            if value is None or not storage.is_local(value):
                continue
            if _exists(value, glob=key == "data.train_path"):
                continue
            if key != "data.train_path" and not is_local_path(value):
                continue
            hint = "<local path or hub id org/name>" if key.startswith("model.") else "<path>"
            text = f"{key}: {value!r} does not exist; pass {key}={hint}"
            if value in _TOY_ARTIFACTS:
                text += " or build the toy world (rglcd-build-toy-world)"
            problems.append(text)
        return problems


def is_local_path(value: str) -> bool:
    """Whether a model reference names a local path rather than a hub id.

    Local: starts with '/', '~', './' or '../' (or is '.'/'..'), contains a backslash, exists
    on disk, or is not of the hub form `name` / `org/name`. So a missing relative folder like
    `outputs/teacher` reads as a hub id: write it as `./outputs/teacher` to get it checked.
    """
    if storage.scheme(value):
        return storage.is_local(value)  # file:// and pkg:// are local; s3:// and gs:// are not
    if value.startswith(("/", "~", "./", "../")) or value in (".", "..") or "\\" in value:
        return True
    return os.path.exists(value) or not _HUB_ID.fullmatch(value)


def _exists(value: str, glob: bool) -> bool:
    """Whether a local location exists (read on this node; a glob must match a file)."""
    if glob and any(ch in value for ch in "*?["):
        folder, pattern = os.path.split(storage.local_path(value))
        return bool(storage.list_files(folder, pattern))
    return storage.exists(value)


def load_trainer_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, check_paths: bool = True
) -> RGLCDConfig:
    """Defaults <- YAML recipe <- `key.sub=value` overrides, validated; ConfigError on problems.

    `check_paths` also requires the local paths the run reads to exist (RGLCDConfig.
    missing_paths); turn it off where the config is built away from the data (a Ray driver
    whose workers hold the weights) or to only lint a recipe.
    """
    cfg = load_config(RGLCDConfig, path, overrides)
    if check_paths:
        problems = cfg.missing_paths()
        if problems:
            raise ConfigError("\n  - ".join(["missing inputs:", *problems]), problems)
    return cfg

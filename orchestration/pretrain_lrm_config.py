"""The typed config tree of `rglcd-pretrain-lrm` (defaults: the toy world's LRM).

    rglcd-pretrain-lrm [--config FILE] [key.sub=value ...]
    rglcd-pretrain-lrm --config configs/lrm/sd-latents.yaml data.latents=/data/... \
        data.clip_dir=/models/clip-vit-large-patch14 output.dir=/models/lrm-sd15-512

Defaults live here only; YAML files hold what differs (configs/lrm/sd-latents.yaml sizes the
latent tower for SD's 4x64x64 latents). The LRM saved at the end records its tower shape in
its own config.json (trainer/lrm/model.py's LatentTowerConfig, no defaults of its own).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rglcd import storage
from rglcd.config_base import StrictModel
from rglcd.toy.paths import TOY_DATA_DIR, TOY_LRM_DIR, TOY_MINICLIP, TOY_PIPELINE


class TowerConfig(StrictModel):
    """Shape of the latent ViT. Defaults: the toy world's 4x8x8 latents (its committed LRM)."""

    patch_size: int = Field(2, ge=1)
    width: int = Field(96, ge=4, description="Divisible by 4 (2-D sincos) and by heads.")
    depth: int = Field(4, ge=1, description="Transformer blocks.")
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TowerConfig:
        if self.width % 4 or self.width % self.heads:
            raise ValueError(
                f"tower.width={self.width} must be divisible by 4 (2-D sincos) and by "
                f"tower.heads={self.heads}; e.g. width=96, heads=4"
            )
        return self


class OptimConfig(StrictModel):
    """The contrastive pretraining run (trainer/lrm/pretrain.py)."""

    steps: int = Field(600, ge=1)
    batch_size: int = Field(128, ge=2, description="Pairs per worker and step.")
    lr: float = Field(1e-3, gt=0, description="Peak of the cosine schedule.")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    text_blocks: int = Field(
        0, ge=0, description="Last text-tower blocks to tune; 0 = the text tower stays locked."
    )
    eval_every: int = Field(200, ge=1, description="Steps between retrieval evaluations.")
    max_minutes: float | None = Field(None, gt=0, description="Stop early (recorded).")


class PretrainDataConfig(StrictModel):
    """What the LRM learns from: the toy world (default) or rglcd-data-job's latent shards."""

    latents: str | None = Field(
        None, description="rglcd-data-job output folder: train on its latent shards."
    )
    heldout_shards: int = Field(1, ge=1, description="With latents: the last N shards.")
    max_rows: int | None = Field(
        None, ge=1, description="With latents: training rows read (all workers)."
    )
    clip_dir: str = Field(TOY_MINICLIP, description="CLIPModel folder (text tower): a path or URI.")
    pipeline_dir: str = Field(TOY_PIPELINE, description="Toy data: the teacher (its VAE).")
    vae_dir: str | None = Field(None, description="AutoencoderKL folder (default: pipeline's).")
    data_dir: str = Field(str(TOY_DATA_DIR), description="Toy scenes (built when missing).")
    n_train: int = Field(40_000, ge=1, description="Toy training scenes (as built).")
    n_eval: int = Field(2_000, ge=1, description="Toy validation/heldout scenes.")


class PretrainScalingConfig(StrictModel):
    """Ray Train workers, or one local process."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = Field(False, description="One GPU per Ray Train worker.")
    local: bool = Field(False, description="Train in this process on `device`, without Ray.")
    device: str = Field("cpu", description="With local: the torch device, e.g. cuda.")

    @model_validator(mode="after")
    def _check(self) -> PretrainScalingConfig:
        if self.device != "cpu" and not self.local:
            raise ValueError(
                f"scaling.device={self.device} needs scaling.local=true; Ray Train workers "
                "use scaling.use_gpu=true"
            )
        if self.local and (self.num_workers != 1 or self.use_gpu):
            raise ValueError(
                "scaling.local=true trains in this one process (scaling.device picks it); "
                "drop scaling.num_workers / scaling.use_gpu, or scaling.local"
            )
        return self


class PretrainOutputConfig(StrictModel):
    dir: str = Field(str(TOY_LRM_DIR), description="Where the trained LRM is copied.")
    storage_path: str = Field(
        "outputs/ray_results", description="Ray Train's storage (relative: to the working "
        "directory)."
    )
    name: str | None = Field(None, description="Ray Train run name (default: timestamped).")


class LRMPretrainConfig(StrictModel):
    """Root of `rglcd-pretrain-lrm`'s tree."""

    seed: int = 0
    tower: TowerConfig = Field(default_factory=TowerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    scaling: PretrainScalingConfig = Field(default_factory=PretrainScalingConfig)
    output: PretrainOutputConfig = Field(default_factory=PretrainOutputConfig)

    def missing_inputs(self) -> list[str]:
        """Model folders the run reads (local paths or URIs) that do not exist, one line each
        with what to do."""
        data = self.data
        required = [("data.clip_dir", storage.join(data.clip_dir, "config.json"))]
        if data.latents is None and data.vae_dir is None:
            required.append(("data.pipeline_dir",
                             storage.join(data.pipeline_dir, "vae", "config.json")))
        elif data.latents is None:
            required.append(("data.vae_dir", storage.join(data.vae_dir, "config.json")))
        return [
            f"{key}: {path} is missing; point {key} at it or build it with rglcd-build-toy-world"
            for key, path in required if not storage.exists(path)
        ]

    def worker_config(self) -> dict:
        """The flat dict the training function reads (Ray Train's train_loop_config). The
        outputs are made absolute here, where Ray Train's storage is set up; the inputs are
        passed as given and opened on the node that reads them (a URI copied into that node's
        cache, a relative path relative to that node's working directory)."""
        flat = {"seed": self.seed, **self.tower.model_dump(), **self.optim.model_dump(),
                **self.data.model_dump(), **self.scaling.model_dump(),
                "output": self.output.dir, "storage_path": self.output.storage_path,
                "name": self.output.name}
        for key in ("output", "storage_path"):
            if flat[key] is not None and storage.is_local(flat[key]):
                flat[key] = storage.local_path(flat[key])
        return flat

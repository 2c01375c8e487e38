"""The evaluation's typed config (`EvalConfig`): models, prompts, scorers, metrics, outputs.

Loaded with `rglcd.configuration.load_config(EvalConfig, path, overrides)`, so a YAML file
holds only what differs from the defaults here and `key.sub=value` overrides address one key
(`scoring.mode=in-process`, `models.0.steps=[1,2,4]`). Defaults describe the toy world.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

from pydantic import Field, model_validator

from reward_service.config import ScorerConfig
from rglcd.config_base import StrictModel
from rglcd.toy.paths import TOY_MINICLIP_DIR

TEACHER_SAMPLERS = ("ddim", "dpmsolver++")
DEFAULT_TEACHER_GUIDANCE = 7.5  # SD's usual CFG scale (Imagen form)
DEFAULT_LCM_GUIDANCE = 8.5  # LatentConsistencyModelPipeline default: w = 7.5 (docs/method.md §4)
DEFAULT_LCM_LORA_GUIDANCE = 1.0  # an LCM-LoRA has no w-embedding: 1 = no CFG, 1 UNet call/step


class ModelSpec(StrictModel):
    """One model to evaluate; each of its `steps` becomes one table row `name@steps`."""

    name: str = Field(description="Row name in the table, e.g. 'teacher' or 'rg-lcm-hps'.")
    path: str = Field(
        description="A diffusers pipeline folder (loaded offline; a local path or an "
        "object-store URI, copied once per node)."
    )
    kind: Literal["teacher", "lcm", "lcm-lora"] = Field(
        description="teacher: SD/SDXL pipeline sampled with CFG; lcm: exported LCM pipeline "
        "(guidance-embedding UNet); lcm-lora: an LCM-LoRA, either fused into `path` "
        "(trainer/run_outputs/export.py export_fused_lora_pipeline) or given as `adapters` on "
        "the teacher folder `path`, sampled with the LCM scheduler (no guidance embedding)."
    )
    adapters: str | None = Field(
        None,
        description="kind lcm-lora: the LoRA adapter folder a LoRA run exports "
        "(<run>/lora, pytorch_lora_weights.safetensors), loaded onto `path` and fused.",
    )
    steps: list[int] = Field(default_factory=lambda: [4], min_length=1)
    sampler: Literal["ddim", "dpmsolver++"] = Field(
        "ddim", description="Teacher sampler (ignored for LCM pipelines, which use LCMScheduler)."
    )
    guidance_scale: float | None = Field(
        None,
        description="Teacher: CFG scale (default 7.5). LCM: the pipeline's guidance_scale, "
        "fed to the UNet as the embedding of w = guidance_scale - 1 (default 8.5).",
    )
    trained_on: list[str] = Field(
        default_factory=list,
        description="Scorer columns (scoring.scorers names) this model's recipe trained on, "
        "directly or through an LRM's expert: the table marks them, as their verdict on this "
        "model is not a held-out one.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.adapters is not None and self.kind != "lcm-lora":
            raise ValueError(
                f"model {self.name!r}: adapters are LoRA weights of an LCM-LoRA; set "
                "kind=lcm-lora (path = the teacher pipeline they were trained on)"
            )
        bad = [s for s in self.steps if s < 1]
        if bad:
            raise ValueError(f"model {self.name!r}: steps {bad} must be >= 1")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"model {self.name!r}: steps {self.steps} has duplicates")
        return self

    @property
    def guidance(self) -> float:
        if self.guidance_scale is not None:
            return self.guidance_scale
        return {"teacher": DEFAULT_TEACHER_GUIDANCE, "lcm": DEFAULT_LCM_GUIDANCE,
                "lcm-lora": DEFAULT_LCM_LORA_GUIDANCE}[self.kind]

    def unet_calls(self, steps: int) -> int:
        """UNet evaluations per image: real CFG (teacher, LCM-LoRA above 1) doubles them."""
        return 2 * steps if self.kind != "lcm" and self.guidance > 1 else steps


def _default_scorers() -> list[ScorerConfig]:
    return [
        ScorerConfig(name="toy-judge", kind="toy-judge"),
        # rules written apart from the toy judge's: the held-out judge of a recipe that
        # trained on the toy judge (paper section 5 reports rewards it did not train on)
        ScorerConfig(name="heldout-judge", kind="heldout-judge"),
        ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=str(TOY_MINICLIP_DIR)),
    ]


class ScoringConfig(StrictModel):
    """Where scores come from: the reward service (handles or HTTP) or in-process scorers."""

    mode: Literal["service", "in-process"] = "service"
    app_name: str = Field("rewards-eval", description="Serve app holding the scorers.")
    url: str | None = Field(
        None, description="Score over HTTP at this base URL (POST {url}/score) instead of handles."
    )
    auth_token_env: str | None = Field(None, description="Env var with the service's token.")
    deploy: bool = Field(
        True,
        description="service mode via handles: if `app_name` is not running, deploy `scorers` "
        "as that app for the evaluation and delete it afterwards.",
    )
    timeout_s: float = Field(120.0, gt=0)
    batch_size: int = Field(64, ge=1, description="Images per scoring request.")
    scorers: list[ScorerConfig] = Field(default_factory=_default_scorers, min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ScoringConfig:
        names = [s.name for s in self.scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"scoring.scorers has duplicate names {names}")
        return self


class WinRateConfig(StrictModel):
    """Head-to-head win rates of row pairs judged by one scorer (stand-in for the human study)."""

    judge: str | None = Field(None, description="Scorer name; default: the first scorer.")
    pairs: list[tuple[str, str]] | None = Field(
        None, description="Row labels 'name@steps' (a vs b); default: every pair of rows."
    )
    method: Literal["wilson", "bootstrap"] = "wilson"
    confidence: float = Field(0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)


class ReferenceConfig(StrictModel):
    """Real images for FID, the HF-noise ratio and the reference's flat-region noise:
    'toy:<split>' or a folder of PNG/JPEG."""

    source: str | None = "toy:validation"
    num_images: int = Field(500, ge=2)
    seed: int = 0


class FidConfig(StrictModel):
    """FID features: a seeded random conv net (toy; trained by nobody, used by no reward),
    the mini CLIP (which the toy-clip recipes optimise) or Inception (real data, user weights)."""

    enabled: bool = True
    features: Literal["random-conv", "miniclip", "inception"] = "random-conv"
    miniclip_dir: str = str(TOY_MINICLIP_DIR)
    inception_weights: str | None = Field(
        None, description="Local FID Inception weights (pt_inception-2015-12-05-6726825d.pth)."
    )


class HfNoiseConfig(StrictModel):
    enabled: bool = True
    cutoff: float = Field(
        0.25, gt=0, lt=0.5, description="Radial frequency (cycles/pixel) above which is 'high'."
    )


class FlatNoiseConfig(StrictModel):
    """Flat-region noise (0-255) of each row's images: the RMS deviation from the 3x3 median
    away from edges, which rises with noise and not with sharper edges (paper section 4)."""

    enabled: bool = True


class GenerationConfig(StrictModel):
    """Image generation on `num_workers` Ray actors, in chunks of `batch_size` items."""

    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(
        1, ge=1, description="Generation actors; each loads every pipeline once (one per GPU)."
    )
    num_cpus_per_task: float = Field(1.0, gt=0, description="CPUs each actor holds.")
    num_gpus_per_task: float = Field(0.0, ge=0, description="GPUs each actor holds.")
    torch_threads: int = Field(1, ge=1)


class EvalOutputConfig(StrictModel):
    dir: str = Field("outputs/eval", description="A local folder or an object-store URI.")
    grid_prompts: int = Field(8, ge=1, description="Prompts (grid rows) per PNG grid.")
    grid_scale: int = Field(4, ge=1, description="Nearest-neighbour upscaling of grid tiles.")
    save_images: bool = Field(
        True,
        description="Save every image, as it is made, to images/<row>/seed<s>/<group>/"
        "<idx:05d>.<image_format> (the HPSv2 benchmark's layout under each seed folder; what "
        "`rglcd-study create` builds a human study from).",
    )
    image_format: Literal["jpg", "png"] = Field("jpg", description="jpg: the HPSv2 protocol's.")


class EvalConfig(StrictModel):
    """The whole evaluation: `rglcd-evaluate --config F [k=v ...]`."""

    models: list[ModelSpec] = Field(min_length=1, description="Models to compare (required).")
    prompts: str = Field(
        "toy:heldout",
        description="A text file (one prompt a line), an HPSv2-style JSON {style: [prompts]}, "
        "or 'toy:<split>' (captions of that toy split).",
    )
    max_prompts: int | None = Field(64, ge=1, description="Per group (None: all).")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    win_rates: WinRateConfig = Field(default_factory=WinRateConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    fid: FidConfig = Field(default_factory=FidConfig)
    hf_noise: HfNoiseConfig = Field(default_factory=HfNoiseConfig)
    flat_noise: FlatNoiseConfig = Field(default_factory=FlatNoiseConfig)
    output: EvalOutputConfig = Field(default_factory=EvalOutputConfig)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models has duplicate names {names}; names label table rows")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} has duplicates")
        scorer_names = [s.name for s in self.scoring.scorers]
        if self.win_rates.judge is not None and self.win_rates.judge not in scorer_names:
            raise ValueError(
                f"win_rates.judge={self.win_rates.judge!r} is not a configured scorer; "
                f"choose one of {scorer_names}"
            )
        for model in self.models:
            unknown = sorted(set(model.trained_on) - set(scorer_names))
            if unknown:
                raise ValueError(
                    f"models {model.name!r}: trained_on {unknown} are not scorer columns; "
                    f"list the names among {scorer_names} that its recipe trained on"
                )
        labels = set(self.row_labels())
        for a, b in self.win_rates.pairs or []:
            unknown = [x for x in (a, b) if x not in labels]
            if unknown:
                raise ValueError(
                    f"win_rates.pairs: unknown row(s) {unknown}; rows are {sorted(labels)}"
                )
        return self

    def rows(self) -> list[tuple[ModelSpec, int]]:
        """(model, steps) for every table row, in config order."""
        return [(m, s) for m in self.models for s in m.steps]

    def row_labels(self) -> list[str]:
        return [row_label(m.name, s) for m, s in self.rows()]

    def judge_name(self) -> str:
        return self.win_rates.judge or self.scoring.scorers[0].name

    def win_rate_pairs(self) -> list[tuple[str, str]]:
        if self.win_rates.pairs is not None:
            return [tuple(p) for p in self.win_rates.pairs]
        return list(combinations(self.row_labels(), 2))


def row_label(name: str, steps: int) -> str:
    return f"{name}@{steps}"

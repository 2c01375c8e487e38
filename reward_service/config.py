"""Typed configuration of the reward service (part of the one config tree).

The trainer's config tree embeds `ServeConfig` as its `serve` section; the service can also be
started on its own (`python -m reward_service --config FILE`) with a YAML holding a `serve:`
section. Defaults describe the toy world, so no argument is needed to get a working service.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from reward_service.scaling import Replicas
from reward_service.scorers.registry import scorer_classes  # the scorer classes declare kinds
from rglcd.config_base import StrictModel
from rglcd.toy.paths import TOY_MINICLIP


class Placement(Replicas):
    """Which nodes a deployment's replicas may run on (docs/cluster.md, Placement).

    By default Ray places a replica on any node with room for its num_cpus / num_gpus, often a
    training node. `resources` asks for custom resources as well (a node started with
    `ray start --resources='{"reward_node": 1}'` offers them; give each replica a fraction so
    several fit); `label_selector` asks for node labels (`ray start --labels=...`, or the
    KubeRay group's labels), e.g. {"ray.io/node-group": "reward-gpu"}.
    """

    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources each replica needs."
    )
    label_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a replica's node must carry."
    )

    def actor_options(self, num_cpus: float, num_gpus: float) -> dict[str, Any]:
        """Serve's ray_actor_options for one replica of this deployment."""
        options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.label_selector:
            options["label_selector"] = dict(self.label_selector)
        return options


class ScorerConfig(Placement):
    """One scorer deployment. `checkpoint` is a local path, URI or hub id (loaded offline)."""

    name: str = Field(description="Name used in requests (`model` field of POST /score).")
    kind: str = Field(description="Implementation: a kind registered in reward_service.scorers.")
    checkpoint: str | None = Field(
        None,
        description="Path, s3:// / gs:// URI (copied once per node into its cache), pkg:// "
        "location or hub id of the weights.",
    )
    processor: str | None = Field(
        None, description="Processor/tokenizer path, URI or hub id (as checkpoint)."
    )
    device: str = "auto"
    max_batch_size: int | None = Field(
        None, ge=1, validate_default=True,
        description="Images per batched scorer call; unset = the scorer kind's default_batch_size.",
    )
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int | None = Field(
        None, ge=1, description="Defaults to max_batch_size x max(2, scorer_threads) so the "
        "concurrent batches can fill.",
    )
    max_queued_requests: int = Field(64, ge=1)
    scorer_threads: int = Field(
        1,
        ge=1,
        description="Batches a replica scores at once. 1 for scorers that compute (a second "
        "thread only contends for the same cores); more for one that waits on a remote API "
        "(a VLM judge), or every batch queues behind the previous call's latency.",
    )
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    call_seconds: float | None = Field(
        None, gt=0, description="Expected seconds of one scorer call on its device (a batch, "
        "or one judge chat call): with lrm.step_seconds, the trainer warns when the expert "
        "cannot answer a step's requests in time. Unset: no such check.",
    )
    health_check_period_s: float = Field(
        10.0, gt=0, description="How often Serve asks the replica whether its scorer works."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Scorer-specific options (e.g. vlm-judge base_url)."
    )

    @field_validator("max_batch_size", mode="after")
    @classmethod
    def _kind_default_batch(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None:
            return value
        scorer = scorer_classes().get(info.data.get("kind", ""))
        return scorer.default_batch_size if scorer is not None else None  # unknown: _check says

    @model_validator(mode="after")
    def _check(self) -> ScorerConfig:
        if self.kind not in scorer_classes():
            raise ValueError(
                f"unknown scorer kind {self.kind!r} for scorer {self.name!r}; "
                f"choose one of {', '.join(scorer_classes())}"
            )
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"scorer {self.name!r}: max_ongoing_requests ({self.max_ongoing_requests}) must be "
                f">= max_batch_size ({self.max_batch_size}) or batches can never fill"
            )
        return self

    @property
    def ongoing_requests(self) -> int:
        return self.max_ongoing_requests or max(2, self.scorer_threads) * self.max_batch_size


class VaeConfig(Placement):
    """A VAE the service may use to decode latent requests."""

    path: str | None = Field(
        None,
        description="Diffusers pipeline folder / hub id, or an AutoencoderKL folder. Unset in a "
        "trainer recipe: the teacher's VAE (model.vae, else model.teacher's vae/ subfolder), so "
        "a recipe names its teacher once; the service on its own needs it set.",
    )
    subfolder: str | None = "vae"
    other_than_teacher: bool = Field(
        False,
        description="A trainer recipe whose expert decodes with this VAE refuses a path other "
        "than the teacher's (the expert must see the images the teacher's VAE makes of the "
        "latents); true = that difference is intended (e.g. a local copy of the same weights).",
    )
    scaling_factor: float | None = Field(
        None, description="Overrides the VAE config's scaling_factor when set."
    )
    device: str = "auto"
    decode_chunk_size: int = Field(16, ge=1, description="Latents decoded per VAE call.")
    max_size_factor: float = Field(
        2.0, gt=0, description="Largest decoded image side, as a multiple of the VAE config's "
        "sample_size (decode cost grows with the square of the latent area); 413 above.",
    )
    max_ongoing_requests: int = Field(8, ge=1)
    max_queued_requests: int = Field(64, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    decode_seconds: float | None = Field(
        None, gt=0, description="Expected seconds to decode one latent on its device (the "
        "capacity check's figure, as ScorerConfig.call_seconds). Unset: no such check.",
    )


def _default_scorers() -> list[ScorerConfig]:
    return [
        ScorerConfig(name="toy-judge", kind="toy-judge"),
        ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=TOY_MINICLIP),
    ]


class ServeConfig(StrictModel):
    """The reward service app: where it listens, its limits, and its scorers."""

    app_name: str = "rewards"
    route_prefix: str = "/"
    host: str = Field("127.0.0.1", description="Bind address; expose beyond loopback on purpose.")
    port: int = Field(8000, ge=1, le=65535)
    auth_token_env: str | None = Field(
        None, description="Name of an env var holding a bearer token; unset = no auth."
    )
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(
        2048 * 2048, ge=1, description="Pixels of one image (or one decoded latent); 413 above."
    )
    max_request_pixels: int = Field(
        4096 * 4096, ge=1,
        description="Pixels of all images of one request together, checked on the image "
        "headers before anything is decoded; 413 above. Inside a scorer replica it also caps "
        "the pixels of one scorer call.",
    )
    max_aspect_ratio: float = Field(
        8.0, ge=1.0, description="Longest over shortest image side; 422 above (a thin image "
        "would be resized to a huge one by the scorers' shortest-side resize).",
    )
    max_prompt_chars: int = Field(4096, ge=1, description="Characters of one prompt; 413 above.")
    max_items_per_request: int = Field(256, ge=1)
    request_timeout_s: float = Field(
        60.0, gt=0, description="Deadline of one request, latent decoding and scoring together."
    )
    vaes: dict[str, VaeConfig] = Field(
        default_factory=lambda: {"toy": VaeConfig()},
        description="Latent decoders by name. A path left unset is the teacher's VAE: the "
        "trainer fills in model.teacher's; the service on its own, the toy world's teacher.",
    )
    scorers: list[ScorerConfig] = Field(default_factory=_default_scorers)

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.max_request_pixels < self.max_image_pixels:
            raise ValueError(
                f"serve.max_request_pixels ({self.max_request_pixels}) must be >= "
                f"serve.max_image_pixels ({self.max_image_pixels}) or no image of the largest "
                "allowed size could be scored"
            )
        return self._unique_names()

    def _unique_names(self) -> ServeConfig:
        names = [s.name for s in self.scorers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"serve.scorers has duplicate names {dupes}; names must be unique")
        return self

    def fill_vae_paths(self, path: str, subfolder: str | None) -> None:
        """VAEs without a path decode with the VAE at `path` (+ `subfolder`): the teacher's."""
        for name, spec in self.vaes.items():
            if spec.path is None:  # a new entry: the dict item, not a shared model, changes
                self.vaes[name] = spec.model_copy(update={"path": path, "subfolder": subfolder})

    def scorer(self, name: str) -> ScorerConfig:
        for spec in self.scorers:
            if spec.name == name:
                return spec
        raise KeyError(name)

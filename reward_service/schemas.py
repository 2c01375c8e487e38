"""JSON bodies of the reward service's HTTP API (pydantic models, no pickle anywhere).

POST /score takes `ScoreRequest` and answers `ScoreResponse`:

    {"model": "toy-judge", "prompts": ["a red circle"], "images": ["<base64 PNG/JPEG>"]}
    {"model": "toy-judge", "prompts": [...], "latents": {"data": "<base64>", "vae": "toy"}}
 -> {"model": "toy-judge", "scores": [0.93], "details": [{}]}

`scores[i]` belongs to item i (request order). An item the scorer could not score has
`scores[i] = null` and `details[i]["error"]` saying why; a request-level problem is an HTTP
error with `{"detail": "..."}` instead (see reward_service/app.py for the status codes).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatentPayload(_Body):
    data: str = Field(description="base64 safetensors (one tensor) or .npy of shape [N, C, H, W]")
    vae: str = Field(description="Name of a configured VAE (GET /models lists them).")


class ScoreRequest(_Body):
    model: str
    prompts: list[str] = Field(min_length=1)
    images: list[str] | None = Field(None, description="base64 PNG or JPEG, one per prompt")
    latents: LatentPayload | None = None

    @model_validator(mode="after")
    def _one_input(self) -> ScoreRequest:
        if (self.images is None) == (self.latents is None):
            raise ValueError("send exactly one of 'images' or 'latents'")
        if self.images is not None and len(self.images) != len(self.prompts):
            raise ValueError(
                f"got {len(self.images)} images but {len(self.prompts)} prompts; "
                "send one prompt per image"
            )
        return self


class ScoreResponse(_Body):
    model: str
    scores: list[float | None] = Field(description="One per item; null where details has error.")
    details: list[dict[str, Any]]


class ModelInfo(_Body):
    name: str
    kind: str
    differentiable: bool
    input_size: int
    max_batch_size: int
    batch_wait_timeout_s: float
    max_ongoing_requests: int
    max_queued_requests: int
    num_replicas: int


class ModelsResponse(_Body):
    models: list[ModelInfo]
    vaes: list[str]


class HealthResponse(_Body):
    status: str
    models: list[str]

"""Scoring generated images: through the reward service (handles or HTTP) or in-process.

Each backend answers `score(scorer, images, prompts) -> (N,) float64` with NaN where the
service gave an item no score (its error is kept in `errors`), never a made-up value.

- `ServiceHandleBackend`: the Serve app's deployment handles via `reward_service.client`
  (the evaluation runs inside the Ray cluster, e.g. as a Ray job);
- `ServiceHttpBackend`: POST {url}/score with base64 PNGs (a service elsewhere);
- `InProcessBackend`: `reward_service.scorers.registry.build_scorer` in this process, for quick
  local runs (`scoring.mode=in-process`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter

import numpy as np

from orchestration.evaluation.config import ScoringConfig
from orchestration.evaluation.generation import to_float
from reward_service.scorers.registry import build_scorer
from rglcd.codecs import encode_image_b64


class ScoreBackend(ABC):
    """Base: chunked scoring and error bookkeeping; subclasses implement `_score_chunk`."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.errors: Counter[str] = Counter()  # "scorer: message" -> count

    def score(self, scorer: str, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """(N, H, W, 3) uint8 images and N prompts -> (N,) float64 scores (NaN = missing)."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        out = np.full(len(prompts), np.nan)
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            scores, errors = self._score_chunk(scorer, images[start:stop], prompts[start:stop])
            for i, (score, error) in enumerate(zip(scores, errors, strict=True)):
                if score is None:
                    self.errors[f"{scorer}: {error}"] += 1
                else:
                    out[start + i] = float(score)
        return out

    @abstractmethod
    def _score_chunk(
        self, scorer: str, images: np.ndarray, prompts: list[str]
    ) -> tuple[list[float | None], list[str | None]]:
        """(score or None, error or None) per item of one chunk."""

    def close(self) -> None:  # noqa: B027 (a no-op unless the backend holds something)
        """Release what the backend holds (nothing by default)."""


class InProcessBackend(ScoreBackend):
    """Scorers built in this process from their configs (weights from local paths only)."""

    def __init__(self, cfg: ScoringConfig) -> None:
        super().__init__(cfg.batch_size)
        self.specs = {spec.name: spec for spec in cfg.scorers}
        self._scorers: dict = {}

    def _score_chunk(self, scorer, images, prompts):
        if scorer not in self._scorers:
            self._scorers[scorer] = build_scorer(self.specs[scorer])
        items = self._scorers[scorer].score_items(to_float(images), list(prompts))
        return [i.score for i in items], [i.error for i in items]


class ServiceHandleBackend(ScoreBackend):
    """The running Serve app `cfg.app_name`, through its deployment handles."""

    def __init__(self, cfg: ScoringConfig) -> None:
        from reward_service.client import RewardClient  # deferred: loads fastapi, ray

        super().__init__(cfg.batch_size)
        self.client = RewardClient(app_name=cfg.app_name, timeout_s=cfg.timeout_s)

    def _score_chunk(self, scorer, images, prompts):
        result = self.client.score_images_sync(scorer, to_float(images), list(prompts))
        return [i.score for i in result.items], [i.error for i in result.items]


class ServiceHttpBackend(ScoreBackend):
    """A reward service reached over HTTP (`POST {url}/score`, reward_service/schemas.py)."""

    def __init__(self, cfg: ScoringConfig) -> None:
        import httpx

        super().__init__(cfg.batch_size)
        headers = {}
        if cfg.auth_token_env:
            token = os.environ.get(cfg.auth_token_env, "")
            if not token:
                raise ValueError(
                    f"scoring.auth_token_env={cfg.auth_token_env!r} is empty; export the token"
                )
            headers["Authorization"] = f"Bearer {token}"
        self.url = cfg.url.rstrip("/") + "/score"
        self.http = httpx.Client(timeout=cfg.timeout_s, headers=headers)

    def _score_chunk(self, scorer, images, prompts):
        floats = to_float(images)
        body = {
            "model": scorer,
            "prompts": list(prompts),
            "images": [encode_image_b64(image) for image in floats],
        }
        response = self.http.post(self.url, json=body)
        if response.status_code >= 500:  # overload / timeout: these items are missing
            reason = f"HTTP {response.status_code}: {response.text[:200]}"
            return [None] * len(prompts), [reason] * len(prompts)
        if response.status_code != 200:
            raise ValueError(
                f"reward service at {self.url} answered {response.status_code} for "
                f"{scorer!r}: {response.text[:300]}"
            )
        data = response.json()
        errors = [d.get("error") for d in data["details"]]
        return data["scores"], errors

    def close(self) -> None:  # noqa: B027 (a no-op unless the backend holds something)
        self.http.close()


def make_backend(cfg: ScoringConfig) -> ScoreBackend:
    if cfg.mode == "in-process":
        return InProcessBackend(cfg)
    if cfg.url is not None:
        return ServiceHttpBackend(cfg)
    return ServiceHandleBackend(cfg)

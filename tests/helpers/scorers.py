"""The scorer test app: rule-based scorers with known answers, shared by the HTTP and the
handle-path tests (tests/ray/test_reward_service_http.py, test_reward_service_handle.py).

One Serve app holds them all (deploying an app starts a process per replica: one app for both
modules instead of two). The replicas import this module by name: the Ray-tier cluster puts
the repository root on their PYTHONPATH (tests/conftest.py).
"""

from __future__ import annotations

import time

import torch

from reward_service.config import ScorerConfig, ServeConfig, VaeConfig
from reward_service.scorers.base import ItemScore, Scorer
from rglcd.toy.paths import TOY_MINICLIP_DIR

APP = "rewards-test"
PREFIX = "/rewards-test"
TOKEN_ENV = "RGLCD_TEST_REWARD_TOKEN"
TOKEN = "s3cret-token"
SLOW_SECONDS = 3.0  # the "slow" scorer (HTTP tests)
BRIGHT_SLOW_SECONDS = 2.0  # the "bright" scorer on a prompt containing "slow" (handle tests)

CHANNELS = {"red": 0, "green": 1, "blue": 2}


class ColorScorer(Scorer):
    """Reward = mean intensity of the colour named in the prompt, minus the other two."""

    differentiable = True
    input_size = 16

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        means = images.mean(dim=(2, 3))  # (N, 3)
        named = [next(w for w in p.split() if w in CHANNELS) for p in prompts]
        picks = torch.tensor([CHANNELS[w] for w in named])
        chosen = means.gather(1, picks[:, None])[:, 0]
        return 2 * chosen - means.sum(dim=1)  # chosen - (sum of the other two)


class FlakyScorer(ColorScorer):
    """Per-item errors: prompts containing 'unscorable' get an explicit error."""

    def score_items(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        ok = super().score_items(images, ["red" if "unscorable" in p else p for p in prompts])
        return [
            ItemScore(score=None, error="prompt names no colour") if "unscorable" in p else item
            for p, item in zip(prompts, ok, strict=True)
        ]


class SlowScorer(ColorScorer):
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        time.sleep(SLOW_SECONDS)
        return super().__call__(images, prompts)


class BrightnessScorer(Scorer):
    """Reward = mean brightness x (number of words in the prompt); 'skip' items get an error;
    a batch with a prompt containing 'slow' takes BRIGHT_SLOW_SECONDS."""

    differentiable = True
    input_size = 16

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if any("slow" in p for p in prompts):
            time.sleep(BRIGHT_SLOW_SECONDS)
        words = torch.tensor([len(p.split()) for p in prompts], dtype=torch.float32)
        return images.mean(dim=(1, 2, 3)) * words

    def score_items(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        items = super().score_items(images, prompts)
        return [
            ItemScore(score=None, error="asked to skip") if "skip" in p else item
            for p, item in zip(prompts, items, strict=True)
        ]


def make_scorer(spec: ScorerConfig) -> Scorer:
    classes = {"color": FlakyScorer, "slow": SlowScorer, "bright": BrightnessScorer}
    if spec.name in classes:
        return classes[spec.name](spec.name)
    from reward_service.scorers.registry import build_scorer

    return build_scorer(spec)  # the real toy judge


def scorer_test_config(vae_dir: str) -> ServeConfig:
    """HTTP limits small enough to hit in tests; the handle path bypasses the HTTP front."""
    scorers = [
        ScorerConfig(name="color", kind="toy-judge", max_batch_size=8, num_cpus=0.1,
                     health_check_period_s=1.0),
        ScorerConfig(
            name="slow", kind="toy-judge", max_batch_size=1, max_ongoing_requests=1,
            max_queued_requests=1, num_cpus=0.1,
        ),
        ScorerConfig(name="toy-judge", kind="toy-judge", num_cpus=0.1),
        ScorerConfig(name="bright", kind="toy-judge", max_batch_size=4, num_cpus=0.1),
        # The real mini CLIP (shortest-side resize), with a queue short enough to overflow.
        ScorerConfig(name="toy-clip", kind="toy-clip", checkpoint=str(TOY_MINICLIP_DIR),
                     max_batch_size=4, max_ongoing_requests=4, max_queued_requests=2,
                     num_cpus=0.1),
    ]
    return ServeConfig(
        app_name=APP,
        route_prefix=PREFIX,
        auth_token_env=TOKEN_ENV,
        max_request_bytes=200_000,
        max_image_pixels=64 * 64,
        max_request_pixels=8 * 64 * 64,
        max_prompt_chars=1000,
        max_items_per_request=16,
        request_timeout_s=1.5,
        vaes={"tiny": VaeConfig(path=vae_dir, num_cpus=0.1)},
        scorers=scorers,
    )


class ConcurrencyProbe(Scorer):
    """Scores 1.0 after `hold_s`; `score_items` reports, as each item's detail, the most
    calls it saw running at once in this replica."""

    differentiable = False
    input_size = 16
    kind = "test-concurrency"

    def __init__(self, name: str, hold_s: float = 0.5) -> None:
        import threading

        self.name, self.hold_s = name, hold_s
        self._lock, self._running, self.most = threading.Lock(), 0, 0

    def __call__(self, images, prompts):
        return torch.ones(len(prompts))

    def score_items(self, images, prompts):
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
        time.sleep(self.hold_s)
        with self._lock:
            self._running -= 1
        return [ItemScore(score=1.0, details={"most_at_once": self.most}) for _ in prompts]


def make_probe(spec: ScorerConfig) -> Scorer:
    return ConcurrencyProbe(spec.name)

"""The vlm-judge scorer against an OpenAI-compatible server running as its own process.

The server (orchestration/rehearsal/judge_server.py) listens on a free loopback port and answers
deterministically from the request's text and image bytes, so the expected VIEScore of every
item can be computed here from the same request parts the scorer sends.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from orchestration.rehearsal.judge_server import judge_scores
from reward_service.config import ScorerConfig
from reward_service.scorers import vlm_judge
from reward_service.scorers.registry import build_scorer

KEY = "s3cret"
PROMPTS = ["a red circle on a blue background", "a small yellow square", "a green triangle"]


@contextmanager
def judge_server(*flags: str, env: dict | None = None):
    """Start the server process; yield its base URL; stop it."""
    command = [sys.executable, "-m", "orchestration.rehearsal.judge_server", "--port", "0", *flags]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = process.stdout.readline()  # printed once the socket listens
        assert line.startswith("listening on "), process.stderr.read()
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server_url():
    env = {**os.environ, "JUDGE_KEY": KEY}
    flags = ("--fail-on", "http500", "--malformed-on", "malformed", "--api-key-env", "JUDGE_KEY")
    with judge_server(*flags, env=env) as url:
        yield url


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)


def _scorer(base_url: str, **options):
    options = {"base_url": base_url, "model": "judge", "api_key_env": "JUDGE_KEY", **options}
    return build_scorer(ScorerConfig(name="judge", kind="vlm-judge", options=options))


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (N, 3, H, W)


def _expected(image: torch.Tensor, prompt: str) -> float:
    png = vlm_judge.image_to_png(image, 512)
    sc = judge_scores(vlm_judge.CONTEXT + vlm_judge.SC_RULES.format(prompt=prompt), png, 1)
    pq = judge_scores(vlm_judge.CONTEXT + vlm_judge.PQ_RULES, png, 2)
    return math.sqrt(min(sc) * min(pq))


def test_scores_over_http_match_the_servers_answers_and_are_cached(server_url, key):
    scorer = _scorer(server_url)
    images = _images(3)
    try:
        scores = scorer(images, PROMPTS)
        assert scores.tolist() == pytest.approx(
            [_expected(i, p) for i, p in zip(images, PROMPTS, strict=True)]
        )
        assert scorer.calls_made == 6  # SC + PQ per image
        assert scorer(images, PROMPTS).tolist() == scores.tolist()
        assert scorer.calls_made == 6  # all three from the cache
    finally:
        scorer.close()


def test_a_cache_smaller_than_a_batch_still_returns_the_cached_items(server_url, key, monkeypatch):
    monkeypatch.setattr(vlm_judge, "RESULT_CACHE_SIZE", 1)
    scorer = _scorer(server_url)
    images = _images(3)
    try:
        first = scorer.score_items(images[:1], PROMPTS[:1])[0].score  # cached
        # The new items evict the cached one before the batch's results are assembled.
        results = scorer.score_items(images, PROMPTS)
        assert [r.score for r in results] == pytest.approx(
            [first, _expected(images[1], PROMPTS[1]), _expected(images[2], PROMPTS[2])]
        )
    finally:
        scorer.close()


def test_server_faults_are_per_item_errors_never_scores(server_url, key):
    scorer = _scorer(server_url)
    prompts = [PROMPTS[0], "a http500 square", "a malformed triangle"]
    images = _images(3)
    try:
        ok, failed, malformed = scorer.score_items(images, prompts)
        assert ok.score == pytest.approx(_expected(images[0], prompts[0]))
        assert failed.score is None and "HTTP 500" in failed.error
        assert malformed.score is None and "no JSON object" in malformed.error
        with pytest.raises(RuntimeError, match="could not score 2 item"):
            scorer(images, prompts)  # errors are not cached: both are asked again, and fail
    finally:
        scorer.close()


def test_the_bearer_token_is_checked(server_url, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    scorer = _scorer(server_url)
    try:
        (result,) = scorer.score_items(_images(1), PROMPTS[:1])
        assert result.score is None and "HTTP 401" in result.error
    finally:
        scorer.close()

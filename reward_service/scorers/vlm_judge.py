"""VIEScore-style judge: a vision-language model behind an OpenAI-compatible chat API.

Per image, two calls (docs/method.md §5, VIEScore t2i), each answered as JSON
`{"score": [...], "reasoning": "..."}` on a 0-10 scale:
  SC: semantic consistency, one score ("does the image follow the prompt")
  PQ: perceptual quality, [naturalness, artifacts]
  SC = min(SC scores), PQ = min(PQ scores), overall O = sqrt(SC * PQ)   (0-10)

Departure from the reference code, on purpose: when an answer cannot be parsed, the
reference substitutes a random integer; here a malformed answer, an HTTP error or a timeout
makes that item's score missing (`ItemScore(score=None, error=...)`), never a made-up value.

The VLM is served elsewhere (vLLM / SGLang) at temperature 0 with JSON output; images go as
downscaled base64 PNG data URLs; calls run on a bounded thread pool; results are cached per
(prompt, image hash), so a repeated pair costs no call.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from reward_service.scorers.base import ItemScore, Scorer, check_batch, register_scorer
from reward_service.scorers.preprocess import resize_longest_side

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig

RESULT_CACHE_SIZE = 16384

CONTEXT = (
    "You are a professional digital artist. You will evaluate AI-generated images by the rules "
    "below. All images, including any people in them, are AI-generated.\n"
    'Answer with JSON only, in this form (keep the reasoning short): '
    '{"score": [...], "reasoning": "..."}\n'
)
SC_RULES = (
    "Rate from 0 to 10 how well the image follows the text prompt. 0: the image does not "
    "follow the prompt at all; 10: it follows the prompt perfectly. Put exactly one number "
    "in the score list.\nText prompt: {prompt}"
)
PQ_RULES = (
    "Rate the image on two criteria, each from 0 to 10. Naturalness: 0 means it looks "
    "unnatural (wrong sense of distance, shadow or lighting), 10 means fully natural. "
    "Artifacts: 0 means heavy distortion, noise, blur or watermarks, 10 means none. Put "
    "exactly two numbers in the score list: [naturalness, artifacts]."
)


class VlmJudgeOptions(BaseModel):
    """`ScorerConfig.options` of a vlm-judge scorer (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="OpenAI-compatible API root, e.g. http://host:8001/v1")
    model: str = Field(description="Model name the server expects in the request.")
    api_key_env: str | None = Field(None, description="Env var holding the API key, if any.")
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(8, ge=1)
    image_max_side: int = Field(512, ge=16)
    max_tokens: int = Field(512, ge=16)
    json_mode: bool = Field(True, description="Send response_format={'type': 'json_object'}.")


def image_to_png(image: torch.Tensor, max_side: int) -> bytes:
    """(3, H, W) in [0, 1] -> PNG bytes, longest side capped at `max_side` (antialiased)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if max(image.shape[-2:]) > max_side:
        image = resize_longest_side(image[None], max_side)[0]
    array = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def parse_scores(text: str, expected: int) -> tuple[list[float], str]:
    """The judge's answer -> (`expected` scores in [0, 10], reasoning); ValueError otherwise."""
    fenced = re.search(r"\{.*\}", text, flags=re.DOTALL)  # tolerate ```json fences / prose
    if fenced is None:
        raise ValueError(f"answer has no JSON object: {text[:200]!r}")
    try:
        answer = json.loads(fenced.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"answer is not valid JSON ({err.msg}): {text[:200]!r}") from None
    scores = answer.get("score") if isinstance(answer, dict) else None
    if not isinstance(scores, list) or len(scores) != expected:
        raise ValueError(f"answer needs 'score' as a list of {expected} numbers: {text[:200]!r}")
    if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        raise ValueError(f"answer scores are not all numbers: {scores!r}")
    if not all(0 <= s <= 10 for s in scores):
        raise ValueError(f"answer scores must lie in [0, 10], got {scores!r}")
    return [float(s) for s in scores], str(answer.get("reasoning", ""))


def viescore(sc_scores: list[float], pq_scores: list[float]) -> tuple[float, float, float]:
    """VIEScore t2i: SC = min, PQ = min, overall = sqrt(SC * PQ); returns (O, SC, PQ)."""
    sc, pq = min(sc_scores), min(pq_scores)
    return math.sqrt(sc * pq), sc, pq


def _result_or_error(call: Future) -> str | RuntimeError:
    try:
        return call.result()
    except RuntimeError as err:
        return err


def _raise_if_error(answer: str | RuntimeError, which: str) -> str:
    if isinstance(answer, RuntimeError):
        raise ValueError(f"{which} call failed: {answer}")
    return answer


@register_scorer
class VlmJudgeScorer(Scorer):
    """Non-differentiable reward from a VLM judge; per-item errors, never default scores."""

    kind = "vlm-judge"
    default_batch_size = 8  # one remote call per item: a batch waits for its slowest answer
    differentiable = False
    input_size = 512
    options = tuple(VlmJudgeOptions.model_fields)

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> VlmJudgeScorer:
        return cls(spec.name, spec.options)

    @classmethod
    def native_input_size(cls, spec: ScorerConfig) -> int:
        return int(spec.options.get("image_max_side", cls.input_size))

    @classmethod
    def call_capacity(cls, spec: ScorerConfig) -> tuple[int, float]:
        """Chat calls at once per replica: `max_concurrency`, or fewer when the replica's
        batches in flight (scorer_threads x max_batch_size images) hold fewer; two calls (SC,
        PQ) per image."""
        in_flight = 2 * spec.scorer_threads * spec.max_batch_size
        return min(VlmJudgeOptions(**spec.options).max_concurrency, in_flight), 0.5

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.options = VlmJudgeOptions(**options)
        self.input_size = self.options.image_max_side
        headers = {"Content-Type": "application/json"}
        if self.options.api_key_env is not None:
            key = os.environ.get(self.options.api_key_env)
            if not key:
                raise ValueError(
                    f"vlm-judge {name!r}: env var {self.options.api_key_env} (options.api_key_env)"
                    " is not set; export the API key or drop api_key_env"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.options.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self.options.timeout_s),  # per connect / read / write
        )
        self._pool = ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix=name)
        self._cache: OrderedDict[tuple[str, str], ItemScore] = OrderedDict()
        self._count_lock = threading.Lock()
        self.calls_made = 0  # chat completions sent (observability; the cache test reads it)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _chat(self, text: str, image_url: str) -> str:
        """One chat completion; returns the message content or raises RuntimeError."""
        body: dict[str, Any] = {
            "model": self.options.model,
            "temperature": 0,
            "max_tokens": self.options.max_tokens,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": CONTEXT + text},
                        {"type": "image_url", "image_url": {"url": image_url}},
                    ],
                }
            ],
        }
        if self.options.json_mode:
            body["response_format"] = {"type": "json_object"}
        with self._count_lock:
            self.calls_made += 1
        try:
            response = self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise RuntimeError(f"judge timed out after {self.options.timeout_s} s") from None
        except httpx.HTTPError as err:
            raise RuntimeError(f"judge request failed: {type(err).__name__}: {err}") from None
        if response.status_code != 200:
            status, text = response.status_code, response.text[:200]
            raise RuntimeError(f"judge answered HTTP {status}: {text}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            text = response.text[:200]
            raise RuntimeError(f"judge reply is not a chat completion with text: {text}")
        return content

    def _judge(self, prompt: str, png: bytes) -> ItemScore:
        """Both VIEScore calls for one image, run concurrently on the pool."""
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        sc_call = self._pool.submit(self._chat, SC_RULES.format(prompt=prompt), url)
        pq_call = self._pool.submit(self._chat, PQ_RULES, url)
        try:  # wait for both calls before reporting, so no call outlives its item
            sc_answer, pq_answer = _result_or_error(sc_call), _result_or_error(pq_call)
            sc_scores, sc_reason = parse_scores(_raise_if_error(sc_answer, "SC"), expected=1)
            pq_scores, pq_reason = parse_scores(_raise_if_error(pq_answer, "PQ"), expected=2)
        except ValueError as err:
            return ItemScore(score=None, error=f"vlm-judge: {err}")
        overall, sc, pq = viescore(sc_scores, pq_scores)
        details = {
            "SC": sc,
            "PQ": pq,
            "sc_scores": sc_scores,
            "pq_scores": pq_scores,
            "sc_reasoning": sc_reason,
            "pq_reasoning": pq_reason,
        }
        return ItemScore(score=overall, details=details)

    def score_items(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        """One result per item; failures are per-item errors. Cached on (prompt, image hash)."""
        check_batch(images, prompts)
        pngs = [image_to_png(image, self.options.image_max_side) for image in images]
        keys = [(p, hashlib.sha256(png).hexdigest()) for p, png in zip(prompts, pngs, strict=True)]
        cached = {k: self._cache[k] for k in keys if k in self._cache}  # before any eviction
        todo = {k: png for k, png in zip(keys, pngs, strict=True) if k not in cached}
        # One waiting thread per item outside the call pool, so the pool only runs HTTP calls.
        with ThreadPoolExecutor(max(1, min(len(todo), 64))) as waiters:
            futures = {k: waiters.submit(self._judge, k[0], png) for k, png in todo.items()}
            fresh = {k: f.result() for k, f in futures.items()}
        for key, result in fresh.items():
            if result.score is not None:  # errors are not cached: a retry may succeed
                self._cache[key] = result
        while len(self._cache) > RESULT_CACHE_SIZE:
            self._cache.popitem(last=False)
        return [fresh[k] if k in fresh else cached[k] for k in keys]

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N,) overall scores; raises if any item has no score (no silent defaults)."""
        results = self.score_items(images, prompts)
        failed = [f"item {i}: {r.error}" for i, r in enumerate(results) if r.score is None]
        if failed:
            summary = "; ".join(failed)
            raise RuntimeError(f"{self.name} could not score {len(failed)} item(s): {summary}")
        return torch.tensor([r.score for r in results], dtype=torch.float32)

"""Scorer registry: `ScorerConfig.kind` -> implementation, and what each kind is without weights.

`build_scorer(spec)` loads a scorer (weights from local paths / the local HF cache only).
`describe_scorer(spec)` says whether it is differentiable and its native input size without
loading any model, so the trainer can validate a config (e.g. "direct reward needs a
differentiable scorer") before anything heavy happens. Implementations are imported lazily:
asking about a kind never imports open_clip, transformers models or an HTTP client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from reward_service.config import SCORER_KINDS, ScorerConfig
from reward_service.scorers.base import Scorer
from rglcd.toy.paths import TOY_MINICLIP_DIR

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # PickScore ships no processor
TOY_IMAGE_SIZE = 32


@dataclass(frozen=True)
class ScorerInfo:
    """Static facts about a scorer kind (docs/method.md §5)."""

    kind: str
    differentiable: bool
    input_size: int
    needs_checkpoint: bool
    options: tuple[str, ...] = ()
    isolated_env: bool = False  # needs its own environment (Ray runtime_env), see imagereward.py


SCORER_INFO: dict[str, ScorerInfo] = {
    "toy-judge": ScorerInfo("toy-judge", False, TOY_IMAGE_SIZE, False),
    "toy-clip": ScorerInfo("toy-clip", True, TOY_IMAGE_SIZE, False),
    "clipscore": ScorerInfo("clipscore", True, 224, True),
    "pickscore": ScorerInfo("pickscore", True, 224, True),
    "hpsv2.1": ScorerInfo("hpsv2.1", True, 224, True, options=("arch", "model_config")),
    "imagereward": ScorerInfo("imagereward", True, 224, True, ("med_config",), isolated_env=True),
    "vlm-judge": ScorerInfo(
        "vlm-judge",
        False,
        512,
        False,
        options=(
            "base_url", "model", "api_key_env", "timeout_s", "max_concurrency",
            "image_max_side", "max_tokens", "json_mode",
        ),
    ),
}
assert set(SCORER_INFO) == set(SCORER_KINDS), "registry and config disagree on scorer kinds"


def _check_spec(spec: ScorerConfig) -> ScorerInfo:
    if spec.kind not in SCORER_INFO:
        kinds = ", ".join(SCORER_INFO)
        raise ValueError(f"scorer {spec.name!r}: unknown kind {spec.kind!r}; choose one of {kinds}")
    info = SCORER_INFO[spec.kind]
    unknown = sorted(set(spec.options) - set(info.options))
    if unknown:
        allowed = ", ".join(info.options) or "none"
        raise ValueError(
            f"scorer {spec.name!r} ({spec.kind}): unknown options {unknown}; allowed: {allowed}"
        )
    if info.needs_checkpoint and not spec.checkpoint:
        raise ValueError(
            f"scorer {spec.name!r} ({spec.kind}) needs `checkpoint`: a local path or hub id "
            "already in the local cache (nothing is downloaded at run time)"
        )
    return info


def _local_json(path_or_id: str | None, filename: str) -> dict | None:
    """A small json from a local model folder, or None (never touches the network)."""
    if path_or_id is None or not (Path(path_or_id) / filename).is_file():
        return None
    return json.loads((Path(path_or_id) / filename).read_text(encoding="utf-8"))


def describe_scorer(spec: ScorerConfig) -> ScorerInfo:
    """Differentiability and native input size of a configured scorer, without loading weights."""
    info = _check_spec(spec)
    if spec.kind == "vlm-judge":
        return replace(info, input_size=int(spec.options.get("image_max_side", info.input_size)))
    if spec.kind in ("clipscore", "pickscore", "toy-clip"):
        checkpoint = spec.checkpoint or str(TOY_MINICLIP_DIR)
        config = _local_json(checkpoint, "config.json")
        if config is not None:
            size = config.get("vision_config", {}).get("image_size", info.input_size)
            return replace(info, input_size=int(size))
    if spec.kind == "hpsv2.1" and spec.options.get("model_config"):
        path = Path(spec.options["model_config"])
        config = _local_json(str(path.parent), path.name)
        if config is not None:
            size = config.get("vision_cfg", {}).get("image_size", info.input_size)
            return replace(info, input_size=int(size))
    return info


def _build_toy_judge(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.toy import ToyJudgeScorer

    return ToyJudgeScorer(spec.name)


def _build_toy_clip(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.toy import toy_clip_scorer

    return toy_clip_scorer(spec.name, spec.checkpoint or str(TOY_MINICLIP_DIR), spec.device)


def _build_clip(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.clip_family import ClipFamilyScorer

    processor = spec.processor
    if spec.kind == "pickscore" and processor is None and spec.checkpoint == PICKSCORE_MODEL:
        processor = PICKSCORE_PROCESSOR
    return ClipFamilyScorer.from_pretrained(
        spec.name,
        spec.checkpoint,
        processor=processor,
        use_logit_scale=spec.kind == "pickscore",
        device=spec.device,
    )


def _build_hps(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.hps import DEFAULT_ARCH, HpsScorer

    return HpsScorer.from_checkpoint(
        spec.name,
        spec.checkpoint,
        arch=spec.options.get("arch", DEFAULT_ARCH),
        model_config=spec.options.get("model_config"),
        device=spec.device,
    )


def _build_imagereward(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.imagereward import ImageRewardScorer

    return ImageRewardScorer.from_checkpoint(
        spec.name, spec.checkpoint, spec.options.get("med_config"), spec.device
    )


def _build_vlm_judge(spec: ScorerConfig) -> Scorer:
    from reward_service.scorers.vlm_judge import VlmJudgeScorer

    return VlmJudgeScorer(spec.name, spec.options)


BUILDERS: dict[str, Callable[[ScorerConfig], Scorer]] = {
    "toy-judge": _build_toy_judge,
    "toy-clip": _build_toy_clip,
    "clipscore": _build_clip,
    "pickscore": _build_clip,
    "hpsv2.1": _build_hps,
    "imagereward": _build_imagereward,
    "vlm-judge": _build_vlm_judge,
}


def build_scorer(spec: ScorerConfig) -> Scorer:
    """Load the scorer a config entry describes (ValueError on a config a user must fix)."""
    _check_spec(spec)
    return BUILDERS[spec.kind](spec)
